"""Fact datasets, prompt formats and loaders."""

from factlens.data.formats import FORMATS, FormattedPrompt, available_formats, format_prompts
from factlens.data.known import FormatAccuracy, filter_known, format_accuracy
from factlens.data.mmlu import load_mmlu, mmlu_accuracy
from factlens.data.loaders import SPORTS, counterfact, from_records, sports_facts, sports_record
from factlens.data.records import FactDataset, FactRecord, MultipleChoice, Neighbor

__all__ = [
    "FactDataset", "FactRecord", "MultipleChoice", "Neighbor", "FormattedPrompt", "FORMATS", "SPORTS",
    "format_prompts", "available_formats", "sports_facts", "counterfact", "from_records", "sports_record",
    "filter_known", "format_accuracy", "FormatAccuracy", "load_mmlu", "mmlu_accuracy",
]
