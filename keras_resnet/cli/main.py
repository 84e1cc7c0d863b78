"""The ``keras-resnet`` click group.

Subcommands live one per module and are imported only when invoked, so ``--help`` is quick and
TensorFlow loads only for commands that need it. To add a command, add a line to ``COMMANDS``.

Bad input (a missing file, an unknown architecture, a bad option value) raises ``ValueError``,
``FileNotFoundError`` or ``click.UsageError`` in the API; here it becomes one line on stderr and
exit code 2. Set ``KERAS_RESNET_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

# command name -> "module:attribute"
COMMANDS = {
    "zoo": "keras_resnet.cli.zoo:zoo",
    "data": "keras_resnet.cli.data:data",
    "fit": "keras_resnet.cli.fit:fit",
    "finetune": "keras_resnet.cli.finetune:finetune",
    "evaluate": "keras_resnet.cli.evaluate:evaluate",
    "predict": "keras_resnet.cli.predict:predict",
    "plot": "keras_resnet.cli.plot:plot",
    "export": "keras_resnet.cli.export:export",
    "tune": "keras_resnet.cli.tune:tune",
}

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError, FileExistsError)


def quiet_tensorflow_import():
    """Import TensorFlow with its C++ start-up chatter (oneDNN, CUDA probing) sent to /dev/null.

    ``TF_CPP_MIN_LOG_LEVEL`` no longer silences these absl lines, so stderr is redirected at
    the file-descriptor level for the import and device discovery only.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(name for name, target in COMMANDS.items()
                      if importlib.util.find_spec(target.split(":")[0]) is not None)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx):
        try:
            if not os.environ.get("KERAS_RESNET_DEBUG"):
                quiet_tensorflow_import()
            return super().invoke(ctx)
        except USER_ERRORS as error:
            if os.environ.get("KERAS_RESNET_DEBUG"):
                raise
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            click.echo(f"Error: {message}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keras-resnet", message="keras-resnet %(version)s")
def cli():
    """ResNets for Keras: build, train, fine-tune, evaluate and export."""


def main():
    # Quiet TensorFlow's C++ start-up logs for command-line users unless they asked for them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli(prog_name="keras-resnet")
