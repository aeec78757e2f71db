"""The baseline nlpforge serve is measured against: what users write by hand.

A FastAPI endpoint that calls a Hugging Face ``pipeline("text-classification")`` (PyTorch) once
per request, on the run dir the export was made from. Listens on 127.0.0.1 only.

    python tools/serve_baseline.py RUN_DIR [--port 8001] [--threads N]
    curl -X POST 127.0.0.1:8001/predict -d '{"text": "what a lovely film"}'
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Item(BaseModel):
    text: str


def make_app(run_dir: str) -> FastAPI:
    classifier = pipeline("text-classification", model=run_dir, tokenizer=run_dir, device=-1)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/predict")
    def predict(item: Item) -> dict:
        return classifier(item.text)[0]

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(make_app(args.run_dir), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
