"""A ``socketserver.ThreadingTCPServer`` echo server and a client of many threads.

    python threaded_echo.py server HOST PORT
    python threaded_echo.py client HOST PORT THREADS [half-close]

The server prints ``{"listening": PORT}`` and echoes every connection until it is killed.
Each client thread connects, sends its own random bytes (a thread-numbered header, then
256 KiB in writes of varied sizes), reads the echo back and compares: until it has as many
bytes as it sent, or, with ``half-close``, until EOF after ``shutdown(SHUT_WR)`` (which the
server's echo loop turns into its own close).  The client prints one
JSON line per thread failure (``{"thread": N, "error": ...}``) and finally
``{"threads_ok": K}``, exiting 1 unless every thread succeeded.  Standard library only.
"""

import json
import os
import socket
import socketserver
import sys
import threading

PAYLOAD = 256 << 10


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def serve(host: str, port: int) -> None:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer((host, port), Echo) as srv:
        srv.daemon_threads = True
        print(json.dumps({"listening": srv.server_address[1]}), flush=True)
        srv.serve_forever()


def one(host: str, port: int, n: int, half_close: bool, errors: list) -> None:
    try:
        data = f"thread {n}\n".encode() + os.urandom(PAYLOAD)
        got = bytearray()
        with socket.create_connection((host, port), timeout=30) as s:
            sent = 0
            step = 1000 + 997 * n
            while sent < len(data):
                s.sendall(data[sent : sent + step])
                sent += step
                while len(got) < min(sent, len(data)) - 65536:  # keep the echo flowing
                    chunk = s.recv(65536)
                    if not chunk:
                        raise AssertionError(f"EOF after {len(got)} bytes of echo")
                    got += chunk
            if half_close:
                s.shutdown(socket.SHUT_WR)
                while chunk := s.recv(65536):
                    got += chunk
            else:
                while len(got) < len(data) and (chunk := s.recv(65536)):
                    got += chunk
        if bytes(got) != data:
            raise AssertionError(f"echo differs: {len(got)} bytes back of {len(data)}")
    except BaseException as exc:
        errors.append({"thread": n, "error": repr(exc)})


def client(host: str, port: int, threads: int, half_close: bool) -> int:
    errors: list = []
    ts = [
        threading.Thread(target=one, args=(host, port, n, half_close, errors))
        for n in range(threads)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for e in errors:
        print(json.dumps(e))
    print(json.dumps({"threads_ok": threads - len(errors)}))
    return 1 if errors else 0


if __name__ == "__main__":
    role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role == "server":
        serve(host, port)
    else:
        sys.exit(client(host, port, int(sys.argv[4]), sys.argv[5:] == ["half-close"]))
