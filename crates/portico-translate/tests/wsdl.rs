//! WSDL import against the fixtures of the test SOAP service: spyne's own WSDLs (SOAP 1.1 and
//! 1.2) and a hand-split copy whose types live in imported and included XSD files.

use portico_translate::wsdl::{self, Builtin, QName, Resolved, SoapVersion, Style, TypeRef};
use portico_translate::xml::Limits;

fn fixture(name: &str) -> String {
    format!(
        "{}/../portico-testkit/soap/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn load(path: &str) -> Result<wsdl::Wsdl, wsdl::WsdlError> {
    wsdl::load(
        path,
        &mut |loc: &str| std::fs::read(loc).map_err(|e| e.to_string()),
        Limits::default(),
    )
}

fn tns(name: &str) -> QName {
    QName {
        ns: "urn:portico:test:calc".into(),
        name: name.into(),
    }
}

fn check_calculator(w: &wsdl::Wsdl, version: SoapVersion) {
    let port = w.port(None, None).unwrap();
    assert_eq!(port.version, version);
    assert!(port.address.ends_with(match version {
        SoapVersion::V11 => "/soap11",
        SoapVersion::V12 => "/soap12",
    }));
    let names: Vec<&str> = port.operations.iter().map(|o| o.name.as_str()).collect();
    for op in ["Add", "Divide", "Crash", "GetPerson", "Sum", "Echo"] {
        assert!(names.contains(&op), "{op} in {names:?}");
    }
    let add = port.operations.iter().find(|o| o.name == "Add").unwrap();
    assert_eq!(add.action, "Add");
    assert_eq!(add.style, Style::Document);
    assert_eq!(add.input[0].element, Some(tns("Add")));
    let s = &w.schema;
    let Some(Resolved::Complex(add_t)) = s.resolve(&s.elements[&tns("Add")].ty) else {
        panic!("Add is a complex type");
    };
    let fields: Vec<(&str, Builtin)> = add_t
        .fields
        .iter()
        .map(|f| (f.name.name.as_str(), s.builtin_of(&f.ty)))
        .collect();
    assert_eq!(fields, [("a", Builtin::Integer), ("b", Builtin::Integer)]);
    assert_eq!(
        add_t.fields[0].name.ns, "urn:portico:test:calc",
        "elementFormDefault=qualified"
    );
    // Person: every kind of field the tests use.
    let person_ref = TypeRef::Named(tns("Person"));
    let Some(Resolved::Complex(person)) = s.resolve(&person_ref) else {
        panic!("Person")
    };
    let kinds: Vec<(&str, Builtin)> = person
        .fields
        .iter()
        .map(|f| (f.name.name.as_str(), s.builtin_of(&f.ty)))
        .collect();
    assert_eq!(
        &kinds[..5],
        &[
            ("id", Builtin::Integer),
            ("name", Builtin::String),
            ("active", Builtin::Boolean),
            ("born", Builtin::Date),
            ("balance", Builtin::Decimal),
        ]
    );
    assert!(
        person
            .fields
            .iter()
            .any(|f| f.name.name == "nickname" && f.nillable)
    );
    assert_eq!(person.attrs[0].name, "kind");
    let phones = person
        .fields
        .iter()
        .find(|f| f.name.name == "phones")
        .unwrap();
    let Some(Resolved::Complex(arr)) = s.resolve(&phones.ty) else {
        panic!("phones")
    };
    assert!(arr.fields[0].repeated());
    // Echo's color is an enumeration.
    let Some(Resolved::Complex(echo)) = s.resolve(&s.elements[&tns("Echo")].ty) else {
        panic!("Echo")
    };
    let color = echo.fields.iter().find(|f| f.name.name == "color").unwrap();
    let Some(Resolved::Simple(st)) = s.resolve(&color.ty) else {
        panic!("Color")
    };
    assert_eq!(st.enumeration, ["red", "green", "blue"]);
}

#[test]
fn the_services_own_wsdls_load() {
    check_calculator(
        &load(&fixture("calculator11.wsdl")).unwrap(),
        SoapVersion::V11,
    );
    check_calculator(
        &load(&fixture("calculator12.wsdl")).unwrap(),
        SoapVersion::V12,
    );
}

#[test]
fn imported_and_included_schemas_are_followed() {
    let w = load(&fixture("split/calculator.wsdl")).unwrap();
    check_calculator(&w, SoapVersion::V11);
    let text = w.describe();
    assert!(text.contains("service CalculatorService"), "{text}");
    assert!(text.contains("GetPerson"), "{text}");
    assert!(text.contains("in:  a: integer?, b: integer?"), "{text}");
}

#[test]
fn unusable_wsdls_are_refused_with_the_file_and_reason() {
    let dir = std::env::temp_dir().join(format!("portico-wsdl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let w = r#"<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><types><xsd:schema><xsd:import namespace="urn:x" schemaLocation="missing.xsd"/></xsd:schema></types></definitions>"#;
    let e = load(&write("a.wsdl", w)).unwrap_err();
    assert!(e.file.ends_with("missing.xsd"), "{e}");
    let e = load(&write(
        "b.wsdl",
        "<!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><definitions/>",
    ))
    .unwrap_err();
    assert!(e.message.contains("DTD"), "{e}");
    let e = load(&write(
        "c.wsdl",
        r#"<description xmlns="http://www.w3.org/ns/wsdl"/>"#,
    ))
    .unwrap_err();
    assert!(e.message.contains("WSDL 2.0 is not supported"), "{e}");
    let e = load(&write(
        "d.wsdl",
        r#"<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"/>"#,
    ))
    .unwrap_err();
    assert!(e.message.contains("no service with a SOAP port"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn envelopes_carry_the_version_action_token_and_nil() {
    use portico_translate::soap::{UsernameToken, request};
    let w11 = load(&fixture("calculator11.wsdl")).unwrap();
    let port = w11.port(None, None).unwrap();
    let get = port.operations.iter().find(|o| o.name == "Add").unwrap();
    let token = UsernameToken {
        username: "gw".into(),
        password: "a<b&c".into(),
    };
    let e = request(
        &w11.schema,
        port,
        get,
        &serde_json::json!({"a": 1, "b": null}),
        Some(&token),
    )
    .unwrap();
    assert_eq!(e.content_type, "text/xml; charset=utf-8");
    assert_eq!(e.soap_action.as_deref(), Some("\"Add\""));
    assert!(
        e.body.starts_with(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\""
        ),
        "{}",
        e.body
    );
    assert!(
        e.body.contains("<wsse:Username>gw</wsse:Username>"),
        "{}",
        e.body
    );
    assert!(
        e.body.contains(">a&lt;b&amp;c</wsse:Password>"),
        "{}",
        e.body
    );
    assert!(
        e.body
            .contains("<ns0:Add><ns0:a>1</ns0:a><ns0:b xsi:nil=\"true\"/></ns0:Add>"),
        "{}",
        e.body
    );
    // The envelope reads back as XML with the operation's element in its namespace.
    let doc = portico_translate::xml::parse(e.body.as_bytes(), &Limits::default()).unwrap();
    let body = doc.child(None, "Body").unwrap();
    assert_eq!(
        body.children[0].ns.as_deref(),
        Some("urn:portico:test:calc")
    );

    let w12 = load(&fixture("calculator12.wsdl")).unwrap();
    let port = w12.port(None, None).unwrap();
    let add = port.operations.iter().find(|o| o.name == "Add").unwrap();
    let e = request(&w12.schema, port, add, &serde_json::json!({}), None).unwrap();
    assert_eq!(
        e.content_type,
        "application/soap+xml; charset=utf-8; action=\"Add\""
    );
    assert_eq!(e.soap_action, None);
    assert!(e.body.contains("http://www.w3.org/2003/05/soap-envelope"));
    assert!(!e.body.contains("Header"));
}

/// An rpc/literal service written by hand: parts typed by `type=`, accessors unqualified,
/// wrapped in an element named after the operation in the binding's namespace.
const RPC_WSDL: &str = r#"<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:tns="urn:rpc" targetNamespace="urn:rpc">
  <types><xsd:schema targetNamespace="urn:rpc">
    <xsd:complexType name="Point"><xsd:sequence>
      <xsd:element name="x" type="xsd:int"/><xsd:element name="y" type="xsd:int"/>
    </xsd:sequence></xsd:complexType>
  </xsd:schema></types>
  <message name="MoveIn"><part name="p" type="tns:Point"/><part name="by" type="xsd:int"/></message>
  <message name="MoveOut"><part name="result" type="tns:Point"/><part name="ok" type="xsd:boolean"/></message>
  <portType name="Geo"><operation name="Move"><input message="tns:MoveIn"/><output message="tns:MoveOut"/></operation></portType>
  <binding name="GeoBinding" type="tns:Geo">
    <soap:binding style="rpc" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="Move"><soap:operation soapAction="urn:rpc#Move"/>
      <input><soap:body use="literal" namespace="urn:rpc"/></input>
      <output><soap:body use="literal" namespace="urn:rpc"/></output>
    </operation>
  </binding>
  <service name="Geo"><port name="GeoPort" binding="tns:GeoBinding"><soap:address location="http://h/geo"/></port></service>
</definitions>"#;

#[test]
fn rpc_literal_operations_wrap_their_parts() {
    use portico_translate::soap::{Reply, request, response};
    let w = wsdl::load(
        "rpc.wsdl",
        &mut |_: &str| Ok(RPC_WSDL.as_bytes().to_vec()),
        Limits::default(),
    )
    .unwrap();
    let port = w.port(None, None).unwrap();
    let op = &port.operations[0];
    assert_eq!(op.style, Style::Rpc);
    let e = request(
        &w.schema,
        port,
        op,
        &serde_json::json!({"p": {"x": 1, "y": 2}, "by": 3}),
        None,
    )
    .unwrap();
    assert_eq!(e.soap_action.as_deref(), Some("\"urn:rpc#Move\""));
    assert!(
        e.body
            .contains("<ns0:Move><p><x>1</x><y>2</y></p><by>3</by></ns0:Move>"),
        "{}",
        e.body
    );
    let err = request(&w.schema, port, op, &serde_json::json!({"q": 1}), None).unwrap_err();
    assert_eq!(err.path, "q");
    let answer = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><r:MoveResponse xmlns:r="urn:rpc"><result><x>4</x><y>5</y></result><ok>1</ok></r:MoveResponse></s:Body></s:Envelope>"#;
    let got = response(&w.schema, port, op, answer, &Limits::default()).unwrap();
    assert_eq!(
        got,
        Reply::Ok(serde_json::json!({"result": {"x": 4, "y": 5}, "ok": true}))
    );
    // The other SOAP version's envelope is not this port's answer.
    let v12 =
        br#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>"#;
    let why = response(&w.schema, port, op, v12, &Limits::default()).unwrap_err();
    assert!(why.contains("a SOAP 1.2 envelope"), "{why}");
}

#[test]
fn a_type_that_contains_itself_gives_a_finite_openapi_document() {
    let text = r#"<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"
    xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:tns="urn:t" targetNamespace="urn:t">
  <types><xsd:schema targetNamespace="urn:t" elementFormDefault="qualified">
    <xsd:complexType name="Tree"><xsd:sequence>
      <xsd:element name="Tree" type="tns:Tree" minOccurs="0" maxOccurs="unbounded"/>
    </xsd:sequence></xsd:complexType>
    <xsd:complexType name="Base"><xsd:sequence><xsd:element name="id" type="xsd:int"/></xsd:sequence></xsd:complexType>
    <xsd:element name="Get"><xsd:complexType><xsd:complexContent><xsd:extension base="tns:Base">
      <xsd:sequence><xsd:element name="depth" type="xsd:int"/></xsd:sequence>
    </xsd:extension></xsd:complexContent></xsd:complexType></xsd:element>
    <xsd:element name="GetResponse"><xsd:complexType><xsd:sequence>
      <xsd:element name="root" type="tns:Tree"/></xsd:sequence></xsd:complexType></xsd:element>
  </xsd:schema></types>
  <message name="In"><part name="p" element="tns:Get"/></message>
  <message name="Out"><part name="p" element="tns:GetResponse"/></message>
  <portType name="T"><operation name="Get"><input message="tns:In"/><output message="tns:Out"/></operation></portType>
  <binding name="B" type="tns:T"><soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="Get"><soap:operation soapAction="Get"/><input><soap:body use="literal"/></input><output><soap:body use="literal"/></output></operation>
  </binding>
  <service name="S"><port name="P" binding="tns:B"><soap:address location="http://h/t"/></port></service>
</definitions>"#;
    let w = wsdl::load(
        "t.wsdl",
        &mut |_: &str| Ok(text.as_bytes().to_vec()),
        Limits::default(),
    )
    .unwrap();
    let port = w.port(None, None).unwrap();
    let doc = portico_translate::openapi::document(&w.schema, port, "/t", "t", &[]);
    assert!(doc["components"]["schemas"]["Tree"].is_object(), "{doc}");
    // An anonymous type that extends a named one has the base's fields first.
    let e = portico_translate::soap::request(
        &w.schema,
        port,
        &port.operations[0],
        &serde_json::json!({"id": 1, "depth": 2}),
        None,
    )
    .unwrap();
    assert!(
        e.body
            .contains("<ns0:id>1</ns0:id><ns0:depth>2</ns0:depth>"),
        "{}",
        e.body
    );
}
