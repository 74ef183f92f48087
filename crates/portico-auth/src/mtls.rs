//! What the gateway reads from a verified client certificate (rustls has already checked the
//! chain against the listener's CA bundle).

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A client certificate's identity, read once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject as RFC 4514-style text, e.g. `CN=alice, O=Example`.
    pub subject: String,
    pub common_name: Option<String>,
    /// Subject alternative names: DNS names and URIs (SPIFFE IDs are URIs).
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    /// Lower-case hex SHA-256 of the DER certificate.
    pub sha256: String,
}

impl ClientCert {
    pub fn from_der(der: &[u8]) -> Result<ClientCert, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let subject = cert.subject().to_string();
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut dns = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        Ok(ClientCert {
            subject,
            common_name,
            dns,
            uris,
            sha256: crate::hex(&Sha256::digest(der)),
        })
    }

    /// Every name a consumer may be mapped by: SAN URIs, SAN DNS names, then the common name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.uris
            .iter()
            .chain(&self.dns)
            .map(String::as_str)
            .chain(self.common_name.as_deref())
    }

    /// The value sent upstream: `Hash=…;Subject="…";URI=…;DNS=…` (one `URI`/`DNS` pair per
    /// name), with `"` and `\` in the subject escaped.
    pub fn header_text(&self) -> String {
        let mut s = format!(
            "Hash={};Subject=\"{}\"",
            self.sha256,
            self.subject.replace('\\', "\\\\").replace('"', "\\\"")
        );
        for u in &self.uris {
            s.push_str(";URI=");
            s.push_str(u);
        }
        for d in &self.dns {
            s.push_str(";DNS=");
            s.push_str(d);
        }
        s
    }
}
