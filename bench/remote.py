"""Model versions through S3-compatible storage: what push and pull cost over copying the bytes.

A text classifier is trained once (BBC News slice, MiniLM, a short fit) and registered; an S3 API
server runs on 127.0.0.1 (moto's server, the one the tests use: boto3 speaks HTTP to it as to
MinIO). Measured, each the median of ``--reps`` runs:

* ``aimass models push`` of the version (sha256 of every file, upload, ``version.json`` last),
  against the peer: boto3 ``upload_file`` of the same files, nothing checked;
* ``aimass models pull`` into a fresh home (listing, download, sha256 of every file, one load of
  the model, registration), against boto3 ``download_file`` of the same files.

The ratios are the price of the checks. Writes ``bench/results/remote.json``.

    python bench/remote.py [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
BUCKET = "bench"


def start_store() -> object:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL_S3=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return server


def trained_version(work: Path) -> str:
    import aimass
    from aimass.data import bbc_news_path, bbc_news_text
    from aimass.tasks.text_classification import TextClassifier

    texts, labels = [], []
    for folder in sorted(bbc_news_path().iterdir()):
        for path in sorted(folder.glob("*.txt"))[:20]:
            texts.append(bbc_news_text(path)[:600])
            labels.append(folder.name)
    model = TextClassifier(backbone="minilm-l6", max_length=64, unfreeze=2, epochs_top=2, seed=0)
    return aimass.register(model.fit((texts, labels), progress=False), "bench-news").ref


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aimass-remote-"))
    os.environ["AIMASS_HOME"] = str(work / "home")
    server = start_store()
    import aimass
    from aimass.store import registry, remote

    s3 = remote.client()
    s3.create_bucket(Bucket=BUCKET)
    ref = trained_version(work)
    folder = registry.open_folder(registry.get_version(ref))
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    times: dict[str, list[float]] = {"push": [], "raw upload": [], "pull": [], "raw download": []}
    for rep in range(args.reps):
        store = f"s3://{BUCKET}/push-{rep}"
        times["push"].append(timed(lambda s=store: aimass.push_model(ref, s)))
        raw = f"raw-{rep}"

        def upload(r=raw):
            for p in files:
                s3.upload_file(str(p), BUCKET, f"{r}/{p.relative_to(folder)}")

        times["raw upload"].append(timed(upload))
        os.environ["AIMASS_HOME"] = str(work / f"home-{rep}")
        times["pull"].append(timed(lambda s=store: aimass.pull_model(f"{s}/{ref.replace(':', '/v')}")))
        os.environ["AIMASS_HOME"] = str(work / "home")
        down = work / f"down-{rep}"

        def download(r=raw, d=down):
            for p in files:
                target = d / p.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(BUCKET, f"{r}/{p.relative_to(folder)}", str(target))

        times["raw download"].append(timed(download))
    server.stop()
    median = {k: round(statistics.median(v), 3) for k, v in times.items()}
    result = {
        "model": ref,
        "files": len(files),
        "bytes": size,
        "median_s": median,
        "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "push_vs_raw": round(median["push"] / median["raw upload"], 2),
        "pull_vs_raw": round(median["pull"] / median["raw download"], 2),
        "push_MB_s": round(size / 1e6 / median["push"], 1),
        "pull_MB_s": round(size / 1e6 / median["pull"], 1),
    }
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine()}
    out = RESULTS / "remote.json"
    out.write_text(json.dumps({**meta, "cpus": os.cpu_count(), **result}, indent=2))
    print(json.dumps(result, indent=2))
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
