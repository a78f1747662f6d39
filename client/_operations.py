"""The usual kinds of inference operation, as a str enum usable wherever a name is."""

from __future__ import annotations

import enum


# Not StrEnum: it would change what str() and format() of a member give to code written
# against this class.
class AIOperationType(str, enum.Enum):  # noqa: UP042
    """Operation kinds; ``emit`` takes a member or any plain string."""

    STYLE_TRANSFER = "style_transfer"
    TEXT_GENERATION = "text_generation"
    CHAT_COMPLETION = "chat_completion"
    EMBEDDING = "embedding"
    CLASSIFICATION = "classification"
    RERANKING = "reranking"
    SUMMARIZATION = "summarization"
    TRANSLATION = "translation"
    IMAGE_GENERATION = "image_generation"
    IMAGE_CLASSIFICATION = "image_classification"
    OBJECT_DETECTION = "object_detection"
    SPEECH_TO_TEXT = "speech_to_text"
    TEXT_TO_SPEECH = "text_to_speech"

    def __str__(self) -> str:
        return self.value
