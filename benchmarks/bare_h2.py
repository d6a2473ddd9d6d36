"""The ceiling for the HTTP/2 scenarios: the h2 library answering a canned response, no ASGI.

    python bare_h2.py PORT [CERT KEY]
"""

import asyncio
import ssl
import sys

import h2.config
import h2.connection
import h2.events

RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"13")]


class BareH2(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data):
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        if any(isinstance(event, h2.events.ConnectionTerminated) for event in events):
            self.transport.close()  # h2load's GOAWAY at the end of a run: nothing more can be sent
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.conn.send_headers(event.stream_id, RESPONSE)
                self.conn.send_data(event.stream_id, b"Hello, world!", end_stream=True)
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.transport.write(self.conn.data_to_send())


async def main(port, cert=None, key=None):
    context = None
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2"])
    server = await asyncio.get_running_loop().create_server(BareH2, "127.0.0.1", port, ssl=context)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), *sys.argv[2:]))
