"""Open N connections to 127.0.0.1:PORT, each with one request (HTTP/1.1 keep-alive, or a
WebSocket handshake), read each answer, print 'idle', then hold them until stdin closes."""
import socket, sys
port, count, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if kind == "http":
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    end = b"hello / "
else:
    request = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    end = b"\r\n\r\n"
held = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    data = b""
    while not data.endswith(end):
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("closed")
        data += chunk
    held.append(s)
print("idle", flush=True)
sys.stdin.read()
