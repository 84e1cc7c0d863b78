"""``keras-resnet export``: SavedModel, ONNX and TFLite artifacts, each parity-checked."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

GATE_FAILED_EXIT = 1


def _image_size(ctx, param, value):
    if value is None:
        return None
    parts = value.lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise click.BadParameter(f"expected N or HxW, got {value!r}") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 8:
        raise click.BadParameter(f"expected N or HxW with sides of at least 8, got {value!r}")
    return size


def _print_summary(manifest, output):
    click.echo(f"{'artifact':<16} {'size':>10} {'max_abs_diff':>13} {'top1':>8}  gate")
    rows = [(e, "published") for e in manifest["artifacts"]] + \
           [(e, "REJECTED") for e in manifest["rejected"]]
    for entry, status in rows:
        parity = entry["parity"]
        size = f"{entry['size_bytes'] / 1e6:.2f} MB" if entry.get("size_bytes") else "-"
        diff = f"{parity['max_abs_diff']:.2e}" if "max_abs_diff" in parity else "-"
        top1 = f"{parity['top1_agreement']:.2%}" if "top1_agreement" in parity else "-"
        click.echo(f"{entry['name']:<16} {size:>10} {diff:>13} {top1:>8}  {status}")
    click.echo(f"manifest: {output}")


@click.command()
@click.argument("model", required=False)
@click.option("--arch", help="Export a zoo architecture instead of MODEL (random weights, or "
              "--weights for the keras_* entries).")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classes of --arch.")
@click.option("--image-size", callback=_image_size,
              help="Input size N or HxW (for --arch, or a model that takes any size).")
@click.option("--weights", help="keras.applications weights for a keras_* --arch: imagenet "
              "or a local .h5 file.")
@click.option("--format", "formats", multiple=True, default=("all",), show_default=True,
              help="savedmodel, onnx, tflite or all; repeat or comma-separate for several.")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Export directory [default: RUN/export, NAME_export beside a .keras file, "
              "or ARCH_export].")
@click.option("--quantize", multiple=True, default=("none",), show_default=True,
              help="TFLite quantization: none, float16, dynamic, int8 or all; repeat or "
              "comma-separate for several artifacts.")
@click.option("--calibration-data", metavar="SPEC",
              help="Images that calibrate int8 (a folder, cifar10, an .npz ...).")
@click.option("--parity-data", metavar="SPEC",
              help="Images the parity gate runs on [default: the calibration data].")
@click.option("--parity-samples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images used by the parity gate.")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=256,
              show_default=True, help="Images used to calibrate int8.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--batch", default="dynamic", show_default=True,
              help="Batch dimension of the artifacts: dynamic or a fixed N.")
@click.option("--max-abs-diff", type=click.FloatRange(min=0),
              help="Override the max-abs-diff tolerance of float artifacts "
              "[default: 1e-5 float32, 1e-2 float16].")
@click.option("--min-top1-agreement", type=click.FloatRange(0, 1),
              help="Override the top-1 agreement required of quantized artifacts "
              "[default: 0.99 dynamic, 0.98 int8].")
@click.option("--verify", is_flag=True,
              help="MODEL is an export directory: check every artifact against manifest.json "
              "and exit 1 if any was changed.")
def export(model, arch, num_classes, image_size, weights, formats, output, quantize,
           calibration_data, parity_data, parity_samples, calibration_samples, opset, batch,
           max_abs_diff, min_top1_agreement, verify):
    """Export MODEL (a .keras file or a run directory) or --arch NAME to deployment artifacts.

    Every artifact takes raw 0-255 RGB pixels (float32, NHWC) and returns probabilities. Each
    is run on the same real images as the Keras model and published into the export directory
    only if it matches (float32: max abs diff <= 1e-5, float16: <= 1e-2, dynamic and int8:
    top-1 agreement >= 99% and 98%). A rejected artifact makes the command exit 1, naming the
    check and by how much; DIR/manifest.json records every artifact with its sha256.
    """
    if verify:
        from keras_resnet.export.manifest import verify_export

        if model is None:
            raise click.UsageError("--verify needs the export directory as MODEL")
        problems = verify_export(model)
        for problem in problems:
            click.echo(f"FAILED: {problem}", err=True)
        if problems:
            sys.exit(GATE_FAILED_EXIT)
        click.echo(f"ok: every artifact in {model} matches its manifest")
        return
    if model is None and arch is None:
        raise click.UsageError("give MODEL (a .keras file or run directory) or --arch NAME")

    import tf2onnx

    from keras_resnet.export.api import ExportGateError, default_output, export as run_export

    tf2onnx.logging.set_level(tf2onnx.logging.WARNING)  # its INFO lines drown the gate's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the log lines show ours already
            manifest = run_export(
                model, output, formats=formats, quantize=quantize, arch=arch,
                num_classes=num_classes, image_size=image_size, weights=weights,
                parity_data=parity_data, calibration_data=calibration_data,
                parity_samples=parity_samples, calibration_samples=calibration_samples,
                opset=opset, batch=batch, max_abs_diff=max_abs_diff,
                min_top1_agreement=min_top1_agreement,
                log=lambda line: click.echo(line, err=True))
    except ExportGateError as error:
        _print_summary(error.manifest, error.manifest_path)
        for failure in error.failures:
            click.echo(f"FAILED: {failure}", err=True)
        sys.exit(GATE_FAILED_EXIT)
    directory = Path(output) if output else default_output(model, arch)
    _print_summary(manifest, directory / "manifest.json")
