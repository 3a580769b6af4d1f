"""The Clair v4 vulnerability gate: scan an OCI image, judge it by a written policy, record the verdict by digest.

`gate_decision(digest, results_dir, allow_unscanned)` is the one question every rollout path asks.
"""

from llmrack.scan.gate import ScanResult, ScanStatus, gate_decision, read_result, record_result

__all__ = ["ScanResult", "ScanStatus", "gate_decision", "read_result", "record_result"]
