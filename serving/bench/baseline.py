"""The baseline a team would otherwise write: a FastAPI route that calls `model.generate()` per request.

One model shared by every request, guarded by a lock (generate() is not safe to run concurrently on one model),
so users are served one after another. It speaks just enough of /v1/completions for the benchmark's client.
Run: `python -m serving.bench.baseline --model DIR --port N`.
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class Body(BaseModel):
    model: str = ""
    prompt: list[int]
    max_tokens: int = 16
    ignore_eos: bool = False


def create_baseline_app(model_dir: Path, device: str = "cpu", dtype: str | None = None) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.model.devices import resolve

    torch_device, torch_dtype = resolve(device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch_dtype)
    model = model.to(torch_device).eval()
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/completions")
    def complete(body: Body) -> dict[str, Any]:
        ids = torch.tensor([body.prompt], device=torch_device)
        extra = {"min_new_tokens": body.max_tokens} if body.ignore_eos else {}
        with lock, torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=body.max_tokens,
                                 do_sample=False, **extra)
        new = out[0, ids.shape[1]:].tolist()
        return {
            "object": "text_completion",
            "choices": [{"index": 0, "text": tokenizer.decode(new, skip_special_tokens=True),
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new),
                      "total_tokens": ids.shape[1] + len(new)},
        }

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()
    app = create_baseline_app(args.model, args.device, args.dtype)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
