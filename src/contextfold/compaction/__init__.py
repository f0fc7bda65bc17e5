"""Compaction: the policy, the tiers (mask, summary, deterministic fallback), and the result record."""

from ._compact import compact, compaction_due
from ._policy import CompactionPolicy, CompactionResult
from ._summary import SUMMARY_PROMPT, digest

__all__ = ["SUMMARY_PROMPT", "CompactionPolicy", "CompactionResult", "compact", "compaction_due", "digest"]
