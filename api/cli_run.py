"""`corral run`, `corral ps` and `corral stop`, with ollama's behaviour and output.

`corral run MODEL PROMPT` prints one streamed answer. Without a prompt, with a
terminal, it opens a chat: `>>> ` prompts, answers streamed as they come, multi-line
input between `\"\"\"` marks, and the commands `/set parameter NAME VALUE`, `/show`,
`/clear`, `/?` and `/bye`. With input piped in, the whole input is the prompt.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from api.client import Client, ClientError
from api.humanize import human_bytes, human_time, table
from store.options import OPTION_KINDS, OptionError, coerce_parameter

ReadLine = Callable[[str], str]
Write = Callable[[str], None]

HELP = """Available Commands:
  /set parameter ...     Set a parameter (e.g. /set parameter temperature 0.5)
  /show                  Show model information (/show info|license|modelfile|parameters|system|template)
  /clear                 Clear session context
  /bye                   Exit
  /?, /help              Help for a command

Use \"\"\" to begin a multi-line message.
"""


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def stream_chat(client: Client, body: dict[str, Any], write: Write) -> dict[str, Any]:
    """Send a chat request and print the answer as it streams; return the whole message."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[Any] = []
    async for chunk in client.stream("POST", "/api/chat", body):
        message = chunk.get("message") or {}
        if message.get("thinking"):
            thinking.append(message["thinking"])
            write(message["thinking"])
        if message.get("content"):
            content.append(message["content"])
            write(message["content"])
        calls.extend(message.get("tool_calls") or [])
    out: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if calls:
        out["tool_calls"] = calls
    return out


class Session:
    """One interactive chat: history, options, and the commands that change them."""

    def __init__(self, client: Client, model: str, write: Write = _out) -> None:
        self.client = client
        self.model = model
        self.write = write
        self.messages: list[dict[str, Any]] = []
        self.options: dict[str, Any] = {}

    async def load(self) -> None:
        await self.client.request("POST", "/api/chat", {"model": self.model, "messages": []})

    async def command(self, line: str) -> bool:
        """Run a /command; return False to leave the session."""
        words = line.split()
        name = words[0].lower()
        if name in ("/bye", "/exit"):
            return False
        if name in ("/?", "/help"):
            self.write(HELP + "\n")
        elif name == "/clear":
            self.messages.clear()
            self.write("Cleared session context\n")
        elif name == "/set":
            self._set(words[1:])
        elif name == "/show":
            await self._show(words[1:])
        else:
            self.write(f"Unknown command '{words[0]}'. Type /? for help\n")
        return True

    def _set(self, args: list[str]) -> None:
        if len(args) < 3 or args[0] != "parameter":
            self.write("Usage:\n  /set parameter <name> <value>\n")
            return
        key, values = args[1], args[2:]
        if key not in OPTION_KINDS:
            self.write(f"Couldn't set parameter: unknown parameter '{key}'\n")
            return
        try:
            if key == "stop":
                self.options["stop"] = values
            else:
                self.options[key] = coerce_parameter(key, " ".join(values))
        except OptionError as exc:
            self.write(f"Couldn't set parameter: {exc}\n")
            return
        self.write(f"Set parameter '{key}' to '{', '.join(values)}'\n")

    async def _show(self, args: list[str]) -> None:
        what = args[0] if args else "info"
        info = await self.client.request("POST", "/api/show", {"model": self.model})
        if what == "info":
            from api.cli import _summary

            self.write(_summary(info) + "\n")
        elif what in ("license", "modelfile", "parameters", "system", "template"):
            text = info.get(what) or f"No {what} was specified for this model."
            self.write(text.rstrip("\n") + "\n")
        else:
            self.write(f"Unknown command '/show {what}'. Type /? for help\n")

    async def ask(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        body: dict[str, Any] = {"model": self.model, "messages": self.messages, "stream": True}
        if self.options:
            body["options"] = self.options
        try:
            reply = await stream_chat(self.client, body, self.write)
        except BaseException:
            self.messages.pop()
            raise
        self.messages.append(reply)
        self.write("\n\n")


def read_message(read_line: ReadLine) -> str | None:
    """One user message: a line, or lines between \"\"\" marks. None at end of input."""
    try:
        line = read_line(">>> ")
    except EOFError:
        return None
    if not line.lstrip().startswith('"""'):
        return line
    first = line.lstrip()[3:]
    if first.endswith('"""') and first:
        return first[:-3]
    lines = [first] if first else []
    while True:
        try:
            line = read_line("... ")
        except EOFError:
            return "\n".join(lines)
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return "\n".join(lines).strip("\n") if lines else ""
        lines.append(line)


async def chat_loop(session: Session, read_line: ReadLine) -> int:
    await session.load()
    while True:
        text = read_message(read_line)
        if text is None:
            session.write("\n")
            return 0
        if not text.strip():
            continue
        if text.startswith("/"):
            if not await session.command(text):
                return 0
            continue
        try:
            await session.ask(text)
        except KeyboardInterrupt:
            session.write("\n")


async def cmd_run(args: argparse.Namespace) -> int:
    prompt = " ".join(args.prompt)
    piped = not sys.stdin.isatty()
    if piped:
        extra = sys.stdin.read()
        prompt = f"{prompt}\n\n{extra}".strip() if prompt else extra
    async with Client() as client:
        if prompt or piped:
            body: dict[str, Any] = {"model": args.model, "stream": True,
                                    "messages": [{"role": "user", "content": prompt}]}
            if args.keepalive is not None:
                body["keep_alive"] = _keep_alive(args.keepalive)
            await stream_chat(client, body, _out)
            _out("\n")
            return 0
        session = Session(client, args.model)
        return await chat_loop(session, input)


def _keep_alive(text: str) -> float | str:
    # ollama's CLI parses the flag itself; a bare number means seconds.
    try:
        return float(text)
    except ValueError:
        return text


def _until(expires: str | None) -> str:
    if not expires:
        return ""
    when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    text = human_time(when)
    return "Stopping..." if text.endswith(" ago") else text


async def cmd_ps(args: argparse.Namespace) -> int:
    async with Client() as client:
        data = await client.request("GET", "/api/ps")
    rows = []
    for m in data.get("models") or []:
        vram = m.get("size_vram", 0)
        size = m.get("size", 0)
        if vram == 0:
            processor = "100% CPU"
        elif vram >= size:
            processor = "100% GPU"
        else:
            cpu = round((size - vram) / size * 100) if size else 0
            processor = f"{cpu}%/{100 - cpu}% CPU/GPU"
        rows.append([m["name"], m.get("digest", "")[:12], human_bytes(size), processor,
                     str(m.get("context_length", "")), _until(m.get("expires_at"))])
    print(table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows))
    return 0


async def cmd_stop(args: argparse.Namespace) -> int:
    async with Client() as client:
        data = await client.request("GET", "/api/ps")
        wanted = args.model if ":" in args.model.rsplit("/", 1)[-1] else args.model + ":latest"
        loaded = {m["name"] for m in data.get("models") or []}
        if args.model not in loaded and wanted not in loaded:
            raise ClientError(f'couldn\'t find model "{args.model}" to stop')
        await client.request("POST", "/api/generate", {"model": args.model, "keep_alive": 0})
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a model: one answer, or an interactive chat")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("prompt", nargs="*", metavar="PROMPT")
    p.add_argument("--keepalive", help="how long the model stays loaded (e.g. 5m, 0, -1)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ps", help="list running models")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("stop", help="stop a running model")
    p.add_argument("model", metavar="MODEL")
    p.set_defaults(func=cmd_stop)
