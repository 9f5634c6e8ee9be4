"""The GPU suite's PyTorch container: an HTTP server around an MLP on the GPU, for checkpoint/restore
and suspend/resume checks of a real framework process.

  python3 torch-server.py --socket PATH | --port P [--hidden 8192] [--layers 5] [--seed 1234]

Weights come from a fixed seed (5 x 8192 x 8192 fp32 = 1.25 GiB by default). Answers are computed
deterministically (TF32 off, deterministic algorithms, one fixed cuBLAS workspace), so the same request
gives the same digits before a checkpoint and after a restore on the same GPU.
  GET /health           -> "ok"
  GET /infer?x=<float>  -> JSON {"x", "y": first 8 outputs as repr strings, "sum": repr of the output sum}
  GET /weights          -> JSON {"sum": repr of the sum of all parameters} (detects damaged weights)
Every response closes its connection (HTTP/1.0), so no connection outlives a request: CRIU then never
meets an established socket at checkpoint time. --socket serves on a unix socket instead of TCP: CRIU
4.1.1 cannot dump a TCP socket on Linux >= 6.16 (getsockopt SO_PASSCRED/SO_PASSSEC answer EOPNOTSUPP
there for anything but unix/netlink sockets, and CRIU treats that as fatal). Writes /tmp/kyb-ready
once it serves.
"""
import argparse
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
import torch  # noqa: E402  (the environment variable must be set before cuBLAS loads)


def build_model(hidden: int, layers: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    mods = []
    for _ in range(layers):
        mods += [torch.nn.Linear(hidden, hidden), torch.nn.Tanh()]
    return torch.nn.Sequential(*mods).cuda().eval()


def main() -> int:
    ap = argparse.ArgumentParser()
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument('--port', type=int)
    where.add_argument('--socket')
    ap.add_argument('--hidden', type=int, default=8192)
    ap.add_argument('--layers', type=int, default=5)
    ap.add_argument('--seed', type=int, default=1234)
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True)
    model = build_model(args.hidden, args.layers, args.seed)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def infer(x: float) -> dict:
        with torch.no_grad():
            gen = torch.Generator(device='cpu').manual_seed(int(x * 1000) & 0x7fffffff)
            inp = (torch.rand(1, args.hidden, generator=gen) * x).cuda()
            out = model(inp)[0].double().cpu()
        return {'x': x, 'y': [repr(float(v)) for v in out[:8]], 'sum': repr(float(out.sum()))}

    def weights() -> dict:
        with torch.no_grad():
            total = sum(float(p.double().sum()) for p in model.parameters())
        return {'sum': repr(total), 'bytes': weight_bytes}

    infer(1.0)  # cuBLAS handles and workspaces exist before the suite measures anything

    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.0'

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            try:
                if url.path == '/health':
                    body, code = b'ok', 200
                elif url.path == '/infer':
                    x = float(parse_qs(url.query).get('x', ['1'])[0])
                    body, code = json.dumps(infer(x)).encode(), 200
                elif url.path == '/weights':
                    body, code = json.dumps(weights()).encode(), 200
                else:
                    body, code = b'not found', 404
            except Exception as err:  # the suite reads the message from the 500 body
                body, code = repr(err).encode(), 500
            self.send_response(code)
            self.send_header('Content-Length', str(len(body)))
            self.send_header('Connection', 'close')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *a: object) -> None:
            pass

        def address_string(self) -> str:  # a unix peer has no host part
            return 'local'

    if args.socket:
        if os.path.exists(args.socket):
            os.unlink(args.socket)
        server: socketserver.BaseServer = socketserver.UnixStreamServer(args.socket, Handler)
    else:
        server = HTTPServer(('127.0.0.1', args.port), Handler)
    with open('/tmp/kyb-ready', 'w') as f:
        f.write(f'{weight_bytes}\n')
    print(f'ready {os.getpid()} {"socket " + args.socket if args.socket else f"port {args.port}"} weights {weight_bytes} torch {torch.__version__}', flush=True)
    server.serve_forever()
    return 0


if __name__ == '__main__':
    sys.exit(main())
