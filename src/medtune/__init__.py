"""medtune: turn an open LLM into a medical model - PT, SFT, alignment, evaluation, serving."""

__version__ = "0.1.0"

NOT_MEDICAL_ADVICE = (
    "medtune models are research software. Their answers are not medical advice: "
    "do not use them to diagnose or treat anyone; ask a qualified clinician."
)
