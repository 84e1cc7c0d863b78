"""Training: ``fit`` (recipes, mixed precision, checkpoints, resume, tf.distribute), and
``finetune`` and ``tune``, which build on it.

Use ``keras_resnet.fit``/``finetune``/``tune`` (or ``keras_resnet.training.fit.fit``): the
functions share their names with the modules that define them, so they are not re-exported
here, where a submodule import would shadow them. Importing this package does not start
TensorFlow.
"""
