"""Python `websockets` as an independent WebSocket peer for greytap's tests.

client mode: connect to wss://HOST/PATH through greytap's SOCKS5 listener (PySocks, remote DNS),
             send N messages (codex-like JSON, every 5th binary), read the echoes, print a JSON report.
server mode: a wss echo server (compression on, context takeover) on 127.0.0.1; prints its port.
"""
import asyncio, json, ssl, sys

import socks  # Debian python3-socks (PySocks)
import websockets


def message(i):
    text = json.dumps({"type": "response.create", "i": i, "input": "python says hello " * (1 + i % 9)})
    return text.encode() if i % 5 == 4 else text


async def client(socks_addr, host, path, ca, n):
    sh, sp = socks_addr.rsplit(":", 1)
    sock = socks.socksocket()
    sock.set_proxy(socks.SOCKS5, sh, int(sp), rdns=True)
    sock.connect((host, 443))
    sock.setblocking(False)
    ctx = ssl.create_default_context(cafile=ca)
    sent = [message(i) for i in range(n)]
    got = []
    async with websockets.connect(f"wss://{host}{path}", sock=sock, ssl=ctx, server_hostname=host, max_size=2**26) as ws:
        for m in sent:
            await ws.send(m)
        for _ in sent:
            got.append(await ws.recv())
        ext = ws.response_headers.get("Sec-WebSocket-Extensions")
        await ws.close(code=1000, reason="python done")
    ok = all(a == b for a, b in zip(sent, got)) and len(got) == len(sent)
    print(json.dumps({"ok": ok, "extensions": ext, "sent": [m if isinstance(m, str) else {"b64": __import__("base64").b64encode(m).decode()} for m in sent]}))


async def server(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def echo(ws, path=None):
        async for m in ws:
            await ws.send(m)

    async with websockets.serve(echo, "127.0.0.1", 0, ssl=ctx, max_size=2**26) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    if sys.argv[1] == "client":
        asyncio.run(client(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])))
    else:
        asyncio.run(server(sys.argv[2], sys.argv[3]))
