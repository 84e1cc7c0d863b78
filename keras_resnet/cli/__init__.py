"""The ``keras-resnet`` command line: a thin click layer over the Python API."""
