"""``aimass export``: a thin shell over :func:`aimass.exporters.export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aimass.cli.shell import JsonFlag, command, emit, out


def attach(app: typer.Typer) -> None:
    app.command("export")(export)


@command
def export(
    model: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx (onnxruntime, no torch) or safetensors (weights for PyTorch); a language model: "
            "safetensors (transformers, vLLM), gguf or gguf-f16 (llama.cpp, ollama).",
        ),
    ] = "onnx",
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "--output",
            "-o",
            help="Folder to write; new or empty (default: NAME-vVERSION-FORMAT here).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a folder that an earlier export wrote.")] = False,
    as_json: JsonFlag = False,
):
    """Write a model to a folder that runs without aimass: weights, preprocessing, labels,
    predict.py and a README."""
    from aimass.api import export as export_model

    emit(export_model(model, fmt, out_dir, force=force), as_json, _render)


def _render(result: dict) -> None:
    check = result["check"]
    size = sum(result["files"].values()) / 1e6
    out.print(f"Exported [bold]{result['ref']}[/] as {result['format']} to {result['out']} ({size:.1f} MB)")
    if "next_token_agreement" in check:  # a language model
        out.print(
            f"Loaded back and teacher-forced on {check['check_inputs']} prompts: next token as aimass's at "
            f"{check['next_token_agreement']:.1%} of {check['positions']} positions, max |logit diff| "
            f"{check['max_abs_diff_logits']:.2g}"
        )
        out.print(f"Next: see {result['out']}/README.md")
        return
    if "predict_py_same_entities" in check:  # an entity tagger
        out.print(
            f"predict.py vs aimass on {check['check_inputs']} check texts: the same entities on "
            f"{check['predict_py_same_entities']:.0%}, max |score diff| {check['max_abs_diff_score']:.1e}"
        )
    else:
        out.print(
            f"predict.py vs aimass on {check['check_inputs']} check inputs: "
            f"max |diff| {check['predict_py_max_abs_diff_proba']:.1e}"
        )
    out.print(f"Next: pip install -r {result['out']}/requirements.txt, then see {result['out']}/README.md")
