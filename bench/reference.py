"""The trivial-handler reference: bench/trivial/main.py on the very server the local run uses
(gunicorn, the same workers and threads), so the only difference to the service is the work.

    python -m bench.reference --port 18071 [--workers 1] [--threads 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from functions_framework import create_app

from local.run import serve

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    app = create_app(target="trivial", source=str(HERE / "trivial" / "main.py"))  # type: ignore[no-untyped-call]
    serve(app, host="127.0.0.1", port=args.port, workers=args.workers, threads=args.threads)


if __name__ == "__main__":
    main()
