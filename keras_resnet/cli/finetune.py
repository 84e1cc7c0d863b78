"""``keras-resnet finetune``: a thin click layer over ``keras_resnet.finetune``."""
from __future__ import annotations

import click

from keras_resnet.cli.recipe import (PRECISIONS, STRATEGIES, config_errors_exit, exit_if_nan,
                                    overrides_from)

FREEZE_CHOICES = ("none", "stem", "stage1", "stage2", "stage3", "stage4", "backbone")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--from", "source", metavar="SOURCE",
              help="Pretrained network: a .keras file or run directory of ours, or keras:NAME "
                   "(keras:resnet50, keras:resnet101v2, ...) with ImageNet weights, "
                   "keras:NAME=path/to/weights.h5 for a local weights file, keras:NAME=random.")
@click.option("--data", "data_spec", metavar="SPEC",
              help="The new dataset: a folder of class folders, an .npz, shapes[:options], "
                   "tfds:NAME.")
@click.option("--config", "recipe", metavar="FILE|NAME",
              help="Recipe for the training settings (YAML file or a name in configs/), "
                   "optionally with a finetune: section.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Phase 2 epochs (the unfrozen network). Default 10.")
@click.option("--head-epochs", type=click.IntRange(min=0),
              help="Phase 1 epochs (new head only, backbone frozen); 0 skips it. Default 3.")
@click.option("--freeze", type=click.Choice(FREEZE_CHOICES),
              help="What stays frozen in phase 2: everything up to and including this part. "
                   "Default none.")
@click.option("--lr", type=float,
              help="Phase 2 peak learning rate (after warm-up). Default 0.02.")
@click.option("--head-lr", type=float, help="Phase 1 learning rate. Default 0.05.")
@click.option("--stage-lr-decay", type=click.FloatRange(0, 1, min_open=True),
              help="Phase 2: the last stage learns at lr*X, the one before at lr*X^2, ... "
                   "Default 1 (same rate everywhere).")
@click.option("--warmup-epochs", type=click.FloatRange(min=0),
              help="Phase 2 linear warm-up. Default min(1, epochs/5).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Global batch size.")
@click.option("--image-size", type=click.IntRange(min=8),
              help="Resize the data to SIZE x SIZE (e.g. 224 for ImageNet weights).")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Compute precision; auto picks bfloat16 where the hardware is fast at it.")
@click.option("--strategy", type=click.Choice(STRATEGIES), help="tf.distribute strategy.")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Run directory (default runs/ARCH-finetune-TIMESTAMP); must be new or empty.")
@click.option("--resume", is_flag=True, help="Continue the run in --output where it stopped.")
@click.option("--seed", type=click.IntRange(min=0), help="Random seed.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def finetune(source, data_spec, recipe, epochs, head_epochs, freeze, lr, head_lr,
             stage_lr_decay, warmup_epochs, batch_size, image_size, precision, strategy, output,
             resume, seed, overrides):
    """Fine-tune a pretrained ResNet on new data: phase 1 trains a new head for the data's
    classes on the frozen backbone (BatchNorm statistics kept), phase 2 unfreezes down to
    --freeze and trains at a lower learning rate after a warm-up.

    The run directory holds head/ and finetune/ (one fit run each) and, for the whole run,
    config.yaml, history.csv, best.keras, model.keras, metrics.json and curves.png.
    KEY=VALUE pairs override any training setting (see keras-resnet fit --help), and
    finetune.KEY=VALUE any fine-tuning one.

    \b
    Examples:
      keras-resnet finetune --from runs/c10/best.keras --data my_photos -o runs/mine
      keras-resnet finetune --from keras:resnet50=resnet50_notop.h5 --data flowers \\
          --image-size 224 --freeze stage2 --stage-lr-decay 0.5 -o runs/flowers
      keras-resnet finetune -o runs/mine --resume
    """
    if not resume and not source:
        raise click.UsageError("--from SOURCE is required (a .keras file, a run directory "
                               "or keras:NAME)")
    flags = {"data.spec": data_spec, "epochs": epochs, "optimizer.lr": lr,
             "finetune.head_epochs": head_epochs, "finetune.freeze": freeze,
             "finetune.head_lr": head_lr, "finetune.stage_lr_decay": stage_lr_decay,
             "schedule.warmup_epochs": warmup_epochs, "batch_size": batch_size,
             "data.image_size": image_size, "precision": precision, "strategy": strategy,
             "seed": seed, "finetune.source": source}
    with config_errors_exit():
        merged = overrides_from(flags, overrides)
        from keras_resnet.training.finetune import finetune as run_finetune

        result = run_finetune(config=recipe, output=output, resume=resume, overrides=merged)
    exit_if_nan(result)
    best = result.metrics.get("best") or {}
    if best.get("value") is not None:
        click.echo(f"Best {best['monitor']} {best['value']:.4f} (phase {best['phase']}, epoch "
                   f"{best['epoch'] + 1}): {result.run_dir / 'best.keras'}")
