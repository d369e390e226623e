"""Shipping a trained model: exports for serving, its model card, and the Hub.

release.py     the one release path (flow and CLI): exports, their comparison, the release folder
exports.py     the model in ONNX / OpenVINO (fp32, int8) and a distilled static model
backends.py    an export loaded as a SentenceTransformer (onnxruntime, OpenVINO), without optimum
compare.py     every export against the PyTorch model: scores, CPU speed, load time, size
card.py        the model card: sentence-transformers' README plus the lineage
references.py  which model ``export`` / ``push`` mean: models/<key>, champion, a folder
publish.py     the upload to the Hub, with a token written nowhere, and when a run publishes
"""
