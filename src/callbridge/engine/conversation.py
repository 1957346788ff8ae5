"""What the model will see next: the system prompt and the turns as the caller lived them.

An interrupted assistant turn is kept only as far as the caller heard it, so the model
neither repeats what was said nor assumes what was not.
"""

from __future__ import annotations

from callbridge.providers.base import Message

__all__ = ["Conversation"]


class Conversation:
    def __init__(self, system_prompt: str | None = None) -> None:
        self._messages: list[Message] = []
        if system_prompt:
            self._messages.append(Message("system", system_prompt))

    def messages(self) -> tuple[Message, ...]:
        return tuple(self._messages)

    def add_user(self, message: Message) -> None:
        self._messages.append(message)

    def add_assistant(self, heard_text: str) -> None:
        if heard_text.strip():
            self._messages.append(Message("assistant", heard_text.strip()))

    def continue_assistant(self, text: str) -> None:
        """The rest of an interrupted reply, said after a false interruption."""
        last = self._messages[-1] if self._messages else None
        if last is not None and last.role == "assistant" and text.strip():
            self._messages[-1] = Message("assistant", f"{last.content} {text.strip()}")
        else:
            self.add_assistant(text)

    def take_last_user(self) -> Message | None:
        """Withdraw the newest user message (the caller went on before hearing a reply)."""
        if self._messages and self._messages[-1].role == "user":
            return self._messages.pop()
        return None
