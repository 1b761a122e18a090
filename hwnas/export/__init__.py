"""Export and the budget verdict: ONNX file + parity check, TensorRT engine, measured PASS / FAIL."""

from hwnas import lend_api_call
from hwnas.export.artifact import ExportReport, ExportRequest, export_and_verify
from hwnas.export.onnx_file import OPSET, Parity, check_parity, export_onnx
from hwnas.export.verdict import Verdict

__all__ = ["OPSET", "ExportReport", "ExportRequest", "Parity", "Verdict", "check_parity", "export_and_verify", "export_onnx"]

lend_api_call(__name__)  # hwnas.export(...) is hwnas.api.export (docs/python_api.md)
