"""A ``socketserver.ForkingTCPServer`` echo server.

    python forking_echo.py HOST PORT

Prints ``{"listening": PORT}`` and serves until killed, each connection in a forked child
(the server's errors, a child's included, go to stderr as socketserver prints them).
"""

import json
import socketserver
import sys


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


if __name__ == "__main__":
    socketserver.ForkingTCPServer.allow_reuse_address = True
    with socketserver.ForkingTCPServer((sys.argv[1], int(sys.argv[2])), Echo) as srv:
        print(json.dumps({"listening": srv.server_address[1]}), flush=True)
        srv.serve_forever()
