"""gptcore: the reference library of the "How GPT Works" course.

Submodules are imported on demand (``import gptcore.tokenizer``); importing
``gptcore`` itself has no side effects and loads nothing heavy.
"""

__version__ = "0.1.0"
