#!/usr/bin/python3
"""Portico SOAP integration-test backend (spyne, SOAP 1.1 + SOAP 1.2).

Run with Debian's interpreter (spyne 2.14 is installed there):

    /usr/bin/python3 server.py

Binds 127.0.0.1 on an ephemeral port, prints ``PORT <n>`` once listening and
serves forever. Exits as soon as its stdin reaches EOF, so a test harness that
drops the child (closing the pipe) never leaks the process. Keep stdin open
(a pipe) while using it: started with stdin=/dev/null it exits immediately.

Endpoints (same service definition, document/literal wrapped):
    /soap11        SOAP 1.1   (GET /soap11?wsdl for the WSDL)
    /soap12        SOAP 1.2   (GET /soap12?wsdl for the WSDL)
"""

import datetime
import decimal
import io
import logging
import os
import socketserver
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lxml.builder import E
from spyne import (Application, Array, Boolean, ComplexModel, Date, Decimal,
                   Double, Enum, Fault, Integer, ServiceBase, Unicode,
                   XmlAttribute, rpc)
from spyne.const.xml import NS_XML
from spyne.protocol.soap import Soap11, Soap12
from spyne.server.wsgi import WsgiApplication

TNS = 'urn:portico:test:calc'

# Keep stderr quiet: spyne logs every fault/validation error otherwise.
logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr)
logging.getLogger('spyne').setLevel(logging.CRITICAL)


Color = Enum('red', 'green', 'blue', type_name='Color')


class Address(ComplexModel):
    __namespace__ = TNS
    street = Unicode
    city = Unicode


class Person(ComplexModel):
    __namespace__ = TNS
    kind = XmlAttribute(Unicode)
    id = Integer
    name = Unicode
    active = Boolean
    born = Date
    balance = Decimal
    # min_occurs=1 so that a None value is serialised as xsi:nil="true"
    # instead of being omitted.
    nickname = Unicode(nillable=True, min_occurs=1)
    address = Address
    phones = Array(Unicode)


PEOPLE = {
    1: dict(name='Ada Lovelace', active=True, born=datetime.date(1815, 12, 10),
            balance=decimal.Decimal('1234.56'), nickname='Countess',
            address=Address(street='12 St James Square', city='London'),
            phones=[]),
    2: dict(name='Alan Turing', active=False, born=datetime.date(1912, 6, 23),
            balance=decimal.Decimal('-7.50'), nickname=None,
            address=Address(street='Hollymeade', city='Wilmslow'),
            phones=['+44 1625 000001']),
    3: dict(name='Grace Hopper', active=True, born=datetime.date(1906, 12, 9),
            balance=decimal.Decimal('1000000.01'), nickname='Amazing Grace',
            address=Address(street='1 Navy Yard', city='Arlington'),
            phones=['+1 555 0100', '+1 555 0101', '+1 555 0102']),
}


class PatchedSoap12(Soap12):
    """Soap12 with spyne 2.14's schema-validation fault serialiser fixed.

    Upstream ``Soap12.schema_validation_error_to_parent`` passes the lxml
    error log (bytes) straight to ElementMaker and uses a prefix instead of a
    namespace, so every lxml validation failure on a SOAP 1.2 endpoint turns
    into wsgiref's plain-text "A server error occurred" 500. Emit a proper
    SOAP 1.2 Fault (Sender / SchemaValidationError) instead.
    """

    def schema_validation_error_to_parent(self, ctx, cls, inst, parent, ns,
                                          **_):
        text = inst.faultstring
        if isinstance(text, bytes):
            text = text.decode('utf-8', 'replace')
        if text.startswith('<string>'):  # same trimming as spyne's Soap11
            text = text[len('<string>'):]
        reason = E('{%s}Reason' % self.ns_soap_env)
        reason.append(E('{%s}Text' % self.ns_soap_env, text,
                        **{'{%s}lang' % NS_XML: inst.lang}))
        subelts = [None, reason,
                   E('{%s}Role' % self.ns_soap_env, inst.faultactor or '')]
        return self._fault_to_parent_impl(ctx, cls, inst, parent, ns, subelts)


def _require(**args):
    missing = sorted(k for k, v in args.items() if v is None)
    if missing:
        raise Fault(faultcode='Client.MissingArgument',
                    faultstring='missing argument(s): ' + ', '.join(missing))


class CalculatorService(ServiceBase):
    @rpc(Integer, Integer, _returns=Integer)
    def Add(ctx, a, b):
        _require(a=a, b=b)
        return a + b

    @rpc(Double, Double, _returns=Double)
    def Divide(ctx, a, b):
        _require(a=a, b=b)
        if b == 0:
            raise Fault(faultcode='Client.DivideByZero',
                        faultstring='division by zero',
                        detail={'DivideByZeroDetail': {
                            'dividend': repr(float(a)),
                            'divisor': repr(float(b)),
                        }})
        return a / b

    @rpc(_returns=Unicode)
    def Crash(ctx):
        raise Fault(faultcode='Server', faultstring='backend exploded')

    @rpc(Integer, _returns=Person)
    def GetPerson(ctx, id):
        data = PEOPLE.get(id)
        if data is None:
            raise Fault(faultcode='Client.NotFound',
                        faultstring='no person with id %r' % (id,))
        return Person(kind='customer', id=id, **data)

    @rpc(Array(Integer), _returns=Integer)
    def Sum(ctx, numbers):
        return sum(n for n in (numbers or []) if n is not None)

    @rpc(Unicode, Integer(ge=0, le=10), Color, _returns=Unicode)
    def Echo(ctx, text, count, color):
        return (text or '') * (count or 0) + ' ' + str(color)


def make_app(in_protocol, out_protocol):
    return WsgiApplication(Application(
        [CalculatorService], tns=TNS, name='CalculatorService',
        in_protocol=in_protocol, out_protocol=out_protocol))


SOAP11 = make_app(Soap11(validator='lxml'), Soap11())
SOAP12 = make_app(PatchedSoap12(validator='lxml'), PatchedSoap12())
ROUTES = {'/soap11': SOAP11, '/soap12': SOAP12}


def _dechunk(stream):
    """Read an HTTP/1.1 chunked request body (wsgiref does not decode it)."""
    body = []
    while True:
        size = int(stream.readline().split(b';', 1)[0].strip() or b'0', 16)
        if size == 0:
            while stream.readline() not in (b'\r\n', b'\n', b''):
                pass  # skip trailers
            return b''.join(body)
        body.append(stream.read(size))
        stream.readline()  # CRLF after each chunk


def dispatcher(environ, start_response):
    if 'chunked' in environ.get('HTTP_TRANSFER_ENCODING', '').lower():
        data = _dechunk(environ['wsgi.input'])
        environ['wsgi.input'] = io.BytesIO(data)
        environ['CONTENT_LENGTH'] = str(len(data))
        del environ['HTTP_TRANSFER_ENCODING']
    app = ROUTES.get(environ.get('PATH_INFO', ''))
    if app is None:
        body = b'not found; use /soap11 or /soap12\n'
        start_response('404 Not Found', [('Content-Type', 'text/plain'),
                                         ('Content-Length', str(len(body)))])
        return [body]
    return app(environ, start_response)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def _exit_on_stdin_eof():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except Exception:
        pass
    os._exit(0)


def main():
    # spyne orders the generated schema by set/dict iteration, so the WSDL
    # bytes depend on str hash randomisation. Pin the seed (exec keeps the same
    # pid, stdin and stdout) so ?wsdl output matches the checked-in fixtures.
    if os.environ.get('PYTHONHASHSEED') != '0':
        env = dict(os.environ, PYTHONHASHSEED='0')
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    httpd = make_server('127.0.0.1', 0, dispatcher,
                        server_class=ThreadingWSGIServer,
                        handler_class=QuietHandler)
    threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    sys.stdout.write('PORT %d\n' % httpd.server_port)
    sys.stdout.flush()
    httpd.serve_forever()


if __name__ == '__main__':
    main()
