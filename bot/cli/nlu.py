"""`safeguard nlu ...`: parse, train and evaluate the NLU."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.common import guard, settings_for

nlu_app = typer.Typer(help="Understand messages: parse, train, evaluate.", no_args_is_help=True)


@nlu_app.command("parse")
def nlu_parse(ctx: typer.Context) -> None:
    """Read one message per line on stdin; write one JSON object per line (intent, urgency)."""
    from nlu.pipeline import build_nlu

    settings = settings_for(ctx, quiet=True)
    nlu = guard(lambda: build_nlu(settings.nlu.engine, settings.nlu.rasa_url))

    async def parse_lines() -> None:
        try:
            for line in sys.stdin:
                text = line.rstrip("\n")
                result = await nlu.parse(text)
                sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
                sys.stdout.flush()
        finally:
            close = getattr(nlu.model, "close", None)
            if close is not None:
                await close()

    asyncio.run(parse_lines())


@nlu_app.command("train")
def nlu_train(ctx: typer.Context) -> None:
    """Train the embedded model from nlu/data (deterministic; the file is named by a data hash)."""
    import time

    from nlu.pipeline import DEFAULT_MODEL_DIR, load_embedded_model

    settings_for(ctx)
    started = time.perf_counter()
    model = guard(lambda: load_embedded_model(retrain=True))
    typer.echo(
        f"Trained on data {model.fingerprint}: {len(model.classes)} intents, "
        f"{len(model.columns)} features, {time.perf_counter() - started:.1f} s; "
        f"saved in {DEFAULT_MODEL_DIR}"
    )


@nlu_app.command("evaluate")
def nlu_evaluate(
    ctx: typer.Context,
    test_file: Annotated[
        Path | None, typer.Option("--test", help="Held-out test set (Rasa YAML).")
    ] = None,
    cv: Annotated[
        int, typer.Option("--cv", help="Also run k-fold cross-validation on the training data.")
    ] = 0,
    matrix: Annotated[
        Path, typer.Option("--matrix", help="Where to write the confusion-matrix PNG.")
    ] = Path("nlu-confusion.png"),
    errors: Annotated[
        bool,
        typer.Option(
            "--errors", help="List each missed urgent message and false alarm (test data only)."
        ),
    ] = False,
) -> None:
    """Per-intent precision/recall/F1, urgent recall and false-escalation rate on held-out data."""
    from nlu.evaluation import DEFAULT_TEST_PATH, cross_validate, evaluate
    from nlu.pipeline import build_nlu
    from nlu.training_data import load_training_data

    settings = settings_for(ctx, quiet=True)
    path = test_file or DEFAULT_TEST_PATH

    def run() -> None:
        nlu = build_nlu(settings.nlu.engine, settings.nlu.rasa_url)
        data = load_training_data()
        result = evaluate(nlu, load_training_data(path), data.intents)
        typer.echo(
            f"Held-out test set {path} ({len(result.gold)} messages), "
            f"engine {settings.nlu.engine}:\n"
        )
        typer.echo(result.table())
        result.confusion_png(matrix)
        typer.echo(f"\nconfusion matrix written to {matrix}")
        if errors:
            typer.echo("\n" + result.errors())
        elif result.missed:
            typer.echo(f"\nurgent messages not escalated: {len(result.missed)}")
        if cv:
            folds = cross_validate(data, cv, nlu.rules, nlu.policy)
            typer.echo(
                f"\n{cv}-fold cross-validation on the training data ({len(folds.gold)} messages):\n"
            )
            typer.echo(folds.table())
            if errors:
                typer.echo("\n" + folds.errors())

    guard(run)
