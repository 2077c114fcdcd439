"""MLServer with adaptive batching: writes its settings files, then runs `mlserver start`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bench.peers.common import parse_args


def main() -> None:
    args = parse_args()
    settings_dir = args.work_dir / "mlserver-settings"
    model_dir = settings_dir / args.model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    server_settings = {
        "host": "127.0.0.1",
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        "load_models_at_startup": True,
    }
    model_settings = {
        "name": args.model_name,
        "implementation": "bench.peers.mlserver_model.TorchModel",
        "max_batch_size": args.max_batch_size,
        "max_batch_time": args.max_queue_delay_ms / 1000.0,
        "parameters": {"extra": {"argv": sys.argv[1:]}},
    }
    (settings_dir / "settings.json").write_text(json.dumps(server_settings, indent=2))
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    mlserver = Path(sys.executable).parent / "mlserver"
    os.execv(str(mlserver), [str(mlserver), "start", str(settings_dir)])


if __name__ == "__main__":
    main()
