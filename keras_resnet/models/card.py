"""The zoo card: parameters and FLOPs of every entry, stored in ``card.json``.

Building all 26 networks twice takes about a minute, too slow for ``keras-resnet zoo list``, so
the figures are computed once and stored. A test recomputes every row from the real models, so
the card can never drift from the code. Regenerate after changing the zoo with::

    python -m keras_resnet.models.card
"""
from __future__ import annotations

import json
from pathlib import Path

CARD_PATH = Path(__file__).with_name("card.json")
CARD_SIZES = (224, 32)


def card_row(name: str) -> dict:
    from keras_resnet.models.info import model_info

    at = {size: model_info(name, size) for size in CARD_SIZES}
    row = {k: at[224][k] for k in ("name", "family", "block", "depth", "num_classes", "params",
                                   "trainable_params")}
    row.update({f"gflops_{size}": at[size]["gflops"] for size in CARD_SIZES})
    return row


def compute_card() -> list[dict]:
    from keras_resnet.models.zoo import list_models

    return [card_row(name) for name in list_models()]


def load_card() -> list[dict]:
    return json.loads(CARD_PATH.read_text())


if __name__ == "__main__":
    CARD_PATH.write_text(json.dumps(compute_card(), indent=1) + "\n")
    print(f"wrote {CARD_PATH}")
