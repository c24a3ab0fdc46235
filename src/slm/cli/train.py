"""``slm train``: fine-tune a base model on a labelled file and write a bundle (:func:`slm.api.train`)."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from slm.cli._results import print_bundle_summary, print_next_steps
from slm.cli._util import (
    DEFAULTS,
    BaseModelOpt,
    ForceOpt,
    LabelColOpt,
    LabelColsOpt,
    LabelSepOpt,
    MarginOpt,
    MaxLengthOpt,
    QuietOpt,
    TextColOpt,
    ThreadsOpt,
    ValidationOpt,
    ValSizeOpt,
    command,
    load_api,
    out,
    split_cols,
)
from slm.training.config import DP_RECIPES, METHODS, TrainConfig
from slm.training.distributed import Launch


class ClassWeight(StrEnum):
    none = "none"
    balanced = "balanced"


# Built from the one list of methods; mypy reads only literal member lists, so it knows no members of it.
Method = StrEnum("Method", {m: m for m in METHODS})  # type: ignore[misc]
DEFAULT_CLASS_WEIGHT = ClassWeight(DEFAULTS.class_weight)
DEFAULT_METHOD = Method(DEFAULTS.method)


def _opt(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help)


DataArg = Annotated[
    Path, typer.Argument(metavar="DATA", help="Labelled CSV, TSV, JSONL or Parquet file.", show_default=False)
]
OutputOpt = Annotated[Path, _opt("-o", "--output", help="Bundle directory to write (replaced only on success).")]
TestOpt = Annotated[Path | None, _opt("--test", help="Separate test file (instead of --test-size).")]
TestSizeOpt = Annotated[float, _opt("--test-size", help="Fraction of DATA held out for testing.")]
EpochsOpt = Annotated[int, _opt("--epochs", help="Maximum passes over the training data.")]
BatchSizeOpt = Annotated[int, _opt("--batch-size", help="Examples per step.")]
LrOpt = Annotated[float, _opt("--lr", help="Learning rate of the encoder.")]
HeadLrOpt = Annotated[float, _opt("--head-lr", help="Learning rate of the classification head.")]
WeightDecayOpt = Annotated[float, _opt("--weight-decay", help="AdamW weight decay.")]
DropoutOpt = Annotated[float, _opt("--dropout", help="Dropout before the head.")]
PatienceOpt = Annotated[int, _opt("--patience", help="Stop after this many epochs without validation gain.")]
SeedOpt = Annotated[int, _opt("--seed", help="Random seed (splits, initialisation, order).")]
MaxMinutesOpt = Annotated[
    float | None, _opt("--max-minutes", help="Time budget for fine-tuning; the best model so far is kept.")
]
ClassWeightOpt = Annotated[ClassWeight, _opt("--class-weight", help="'balanced' up-weights rare labels in the loss.")]
EnsembleOpt = Annotated[bool, _opt("--ensemble/--no-ensemble", help="Also build the transformer + n-gram ensemble.")]
RobustnessOpt = Annotated[
    bool,
    _opt(
        "--robustness/--no-robustness",
        help="Score the shipped model and the baseline on perturbed test texts (typos, casing, ...) and per "
        "slice in the report.",
    ),
]
ResumeOpt = Annotated[bool, _opt("--resume", help="Continue an interrupted run from OUTPUT.ckpt/ next to OUTPUT.")]
MethodOpt = Annotated[
    Method,
    _opt(
        "--method",
        help="full: fine-tune every weight; lora/adalora: low-rank adapters, merged before saving; "
        "fewshot: contrastive tuning + linear head (few examples per class); head: linear head on the "
        "frozen encoder; auto: choose from the examples per class.",
    ),
]
UnlabeledOpt = Annotated[
    Path | None, _opt("--unlabeled", help="Unlabelled domain texts (CSV/TSV/JSONL/Parquet) for self-training.")
]
UnlabeledColOpt = Annotated[str | None, _opt("--unlabeled-text-col", help="Text column of the --unlabeled file.")]
RoundsOpt = Annotated[int, _opt("--self-training-rounds", help="Pseudo-labelling rounds with --unlabeled.")]
NprocOpt = Annotated[
    int,
    typer.Option("--nproc", min=1, help="Training processes on this machine (PyTorch DDP, started like torchrun)."),
]
NnodesOpt = Annotated[int, typer.Option("--nnodes", min=1, help="Machines in the job; run the same command on each.")]
RdzvOpt = Annotated[
    str | None, _opt("--rdzv-endpoint", help="HOST:PORT every node meets at (needed with --nnodes > 1).")
]
LoraROpt = Annotated[int, _opt("--lora-r", help="LoRA/AdaLoRA rank.")]
LoraAlphaOpt = Annotated[int, _opt("--lora-alpha", help="LoRA scaling numerator.")]
LoraLrOpt = Annotated[float, _opt("--lora-lr", help="Learning rate of the LoRA adapters.")]
ContrastiveOpt = Annotated[
    int, _opt("--contrastive-epochs", help="Few-shot: passes over the classes in contrastive tuning.")
]
LexiconOpt = Annotated[
    Path | None,
    _opt(
        "--lexicon",
        help="Industry dictionary (one term per line, 'term | alias', CSV or JSON): its terms become whole "
        "tokens, each initialised from the mean of its former pieces.",
    ),
]
DpEpsilonOpt = Annotated[
    float | None,
    _opt(
        "--dp-epsilon",
        help="Train with differential privacy (DP-SGD, Opacus): the privacy budget epsilon, e.g. 8 (lower is more "
        "private and less accurate). Needs slm[privacy]; ships no n-gram ensemble.",
    ),
]
DpDeltaOpt = Annotated[float | None, _opt("--dp-delta", help="With --dp-epsilon: delta (default 1/n training rows).")]
DpClipOpt = Annotated[
    float, _opt("--dp-max-grad-norm", help="With --dp-epsilon: each example's gradient is clipped to this norm.")
]
DpRecipe = StrEnum("DpRecipe", {m: m for m in DP_RECIPES})  # type: ignore[misc]
DEFAULT_DP_RECIPE = DpRecipe(DEFAULTS.dp_recipe)
DpRecipeOpt = Annotated[
    DpRecipe,
    _opt(
        "--dp-recipe",
        help="With --dp-epsilon: head (linear head on the frozen encoder), lora, full, or auto (the measured best).",
    ),
]
RedactOpt = Annotated[
    bool,
    _opt(
        "--redact",
        help="Replace personal data (e-mail addresses; phone, card, IBAN and ID numbers; IPs; URLs; birth dates) "
        "with placeholders in every text as it is read: the model, the n-gram vocabulary and the report hold none.",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    _opt(
        "--config",
        help="Training configuration JSON (e.g. best_config.json from 'slm tune'); flags given explicitly override it.",
    ),
]

# TrainConfig field -> the train command's parameter that sets it (the CLI name differs for a few).
CONFIG_FLAGS = {
    "base_model": "base_model", "epochs": "epochs", "batch_size": "batch_size", "learning_rate": "lr",
    "head_learning_rate": "head_lr", "weight_decay": "weight_decay", "dropout": "dropout",
    "max_length": "max_length", "patience": "patience", "seed": "seed", "max_minutes": "max_minutes",
    "class_weight": "class_weight", "ensemble": "ensemble", "robustness": "robustness", "threads": "threads",
    "method": "method",
    "lora_r": "lora_r", "lora_alpha": "lora_alpha", "lora_learning_rate": "lora_lr",
    "contrastive_epochs": "contrastive_epochs", "self_training_rounds": "self_training_rounds", "lexicon": "lexicon",
    "dp_epsilon": "dp_epsilon", "dp_delta": "dp_delta", "dp_max_grad_norm": "dp_max_grad_norm",
    "dp_recipe": "dp_recipe",
}  # fmt: skip


def _config_value(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    return str(value) if isinstance(value, Path) else value


def train_config(ctx: typer.Context, config_file: Path | None) -> TrainConfig:
    """Flag values, or a saved configuration (e.g. from 'slm tune') with the flags given explicitly on top."""
    flags = {field: (param, _config_value(ctx.params[param])) for field, param in CONFIG_FLAGS.items()}
    settings = {name: value for name, (_, value) in flags.items()}
    if config_file is not None:
        from slm.fileio import read_json_object

        saved = TrainConfig.from_dict(read_json_object(config_file, "training configuration")).to_dict()
        explicit = {
            name: value
            for name, (param, value) in flags.items()
            # compared by name: typer ships its own copy of click's ParameterSource enum
            if getattr(ctx.get_parameter_source(param), "name", None) == "COMMANDLINE"
        }
        settings = {**saved, **explicit}
    return TrainConfig.from_dict(settings)


@command(no_args_is_help=True)
def train(
    ctx: typer.Context,
    data: DataArg,
    output: OutputOpt,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    label_cols: LabelColsOpt = None,
    label_sep: LabelSepOpt = None,
    validation: ValidationOpt = None,
    test: TestOpt = None,
    val_size: ValSizeOpt = 0.1,
    test_size: TestSizeOpt = 0.1,
    base_model: BaseModelOpt = DEFAULTS.base_model,
    epochs: EpochsOpt = DEFAULTS.epochs,
    batch_size: BatchSizeOpt = DEFAULTS.batch_size,
    lr: LrOpt = DEFAULTS.learning_rate,
    head_lr: HeadLrOpt = DEFAULTS.head_learning_rate,
    weight_decay: WeightDecayOpt = DEFAULTS.weight_decay,
    dropout: DropoutOpt = DEFAULTS.dropout,
    max_length: MaxLengthOpt = DEFAULTS.max_length,
    patience: PatienceOpt = DEFAULTS.patience,
    seed: SeedOpt = DEFAULTS.seed,
    max_minutes: MaxMinutesOpt = DEFAULTS.max_minutes,
    class_weight: ClassWeightOpt = DEFAULT_CLASS_WEIGHT,
    ensemble: EnsembleOpt = DEFAULTS.ensemble,
    robustness: RobustnessOpt = DEFAULTS.robustness,
    margin: MarginOpt = 1.0,
    threads: ThreadsOpt = DEFAULTS.threads,
    resume: ResumeOpt = False,
    method: MethodOpt = DEFAULT_METHOD,
    unlabeled: UnlabeledOpt = None,
    unlabeled_text_col: UnlabeledColOpt = None,
    self_training_rounds: RoundsOpt = DEFAULTS.self_training_rounds,
    nproc: NprocOpt = 1,
    nnodes: NnodesOpt = 1,
    rdzv_endpoint: RdzvOpt = None,
    lora_r: LoraROpt = DEFAULTS.lora_r,
    lora_alpha: LoraAlphaOpt = DEFAULTS.lora_alpha,
    lora_lr: LoraLrOpt = DEFAULTS.lora_learning_rate,
    contrastive_epochs: ContrastiveOpt = DEFAULTS.contrastive_epochs,
    lexicon: LexiconOpt = None,
    dp_epsilon: DpEpsilonOpt = None,
    dp_delta: DpDeltaOpt = None,
    dp_max_grad_norm: DpClipOpt = DEFAULTS.dp_max_grad_norm,
    dp_recipe: DpRecipeOpt = DEFAULT_DP_RECIPE,
    redact: RedactOpt = False,
    config_file: ConfigOpt = None,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
) -> None:
    """Fine-tune a base model on a labelled file and write a reusable bundle.

    DATA needs a text column and a label column (found by name, or set with --text-col and
    --label-col). It is split into train/validation/test (stratified, seeded), the transformer is
    fine-tuned next to a TF-IDF + logistic-regression baseline, both are scored on the test split,
    and OUTPUT receives the model, the baseline and a report (OUTPUT/report/report.html).

    Bad input is refused before any model is loaded; an existing OUTPUT is replaced only when
    training succeeds. Ctrl-C saves a checkpoint: add --resume to continue.
    """
    config = train_config(ctx, config_file)
    api = load_api()
    start = time.monotonic()
    bundle = api.train(
        data, output=output, text_col=text_col, label_col=label_col, label_cols=split_cols(label_cols),
        label_sep=label_sep, validation=validation, test=test, val_size=val_size, test_size=test_size,
        config=config, margin_points=margin, resume=resume, show_progress=not quiet, unlabeled=unlabeled,
        unlabeled_text_col=unlabeled_text_col, force=force, redact=redact,
        launch=Launch(nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, run_id=f"slm-{output.name}"),
    )  # fmt: skip
    if bundle is None:  # a node of a multi-node job without rank 0
        out.print("this node's training processes finished; rank 0 writes the bundle on its node")
        return
    print_bundle_summary(bundle, time.monotonic() - start)
    print_next_steps(output, test)
