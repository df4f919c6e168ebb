"""`corral run`, `corral ps` and `corral stop`, with ollama's behaviour and output.

`corral run MODEL PROMPT` prints one streamed answer (flags may come anywhere among the
words). A model that is not here is pulled first. Without a prompt, on a terminal, it opens
a chat: `>>> ` prompts with line editing and history (readline), answers streamed as they
come, multi-line input between `\"\"\"` marks, and the `/set`, `/show`, `/load`, `/clear`,
`/?` and `/bye` commands. Ctrl-C during an answer stops that answer and keeps the session;
Ctrl-C at an empty prompt prints a hint, and a second one in a row leaves. With input
piped in, the whole input is the prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from api.client import Client, ClientError
from api.humanize import go_duration, human_bytes, human_time, table
from api.progress import ProgressRenderer
from store.options import OPTION_KINDS, OptionError, coerce_parameter

ReadLine = Callable[[str], str]
Write = Callable[[str], None]
T = TypeVar("T")

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""

SET_HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking
"""

SHOW_HELP = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""

SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
  Alt + b             Move back (left) one word
  Alt + f             Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor
  Up / Down           Previous / next message in the history

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit (/bye)
"""

EXIT_HINT = "Use Ctrl + d or /bye to exit."
HISTORY_FILE = Path("~/.corral/history")


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


# -- one answer ----------------------------------------------------------------------------


class AnswerPrinter:
    """Prints a streamed answer: thinking between `Thinking...` and `...done thinking.`
    (or not at all when hidden), then the content."""

    def __init__(self, write: Write, hide_thinking: bool = False) -> None:
        self.write = write
        self.hide_thinking = hide_thinking
        self.thinking = False

    def piece(self, thinking: str, content: str) -> None:
        if thinking and not self.hide_thinking:
            if not self.thinking:
                self.write("Thinking...\n")
                self.thinking = True
            self.write(thinking)
        if content:
            self.end_thinking()
            self.write(content)

    def end_thinking(self) -> None:
        if self.thinking:
            self.write("\n...done thinking.\n\n")
            self.thinking = False


async def stream_chat(client: Client, body: dict[str, Any], write: Write,
                      hide_thinking: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send a chat request and print the answer as it streams; return the whole message
    and the final chunk (with the timings)."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[Any] = []
    last: dict[str, Any] = {}
    printer = AnswerPrinter(write, hide_thinking)
    async for chunk in client.stream("POST", "/api/chat", body):
        message = chunk.get("message") or {}
        printer.piece(message.get("thinking") or "", message.get("content") or "")
        thinking.append(message.get("thinking") or "")
        content.append(message.get("content") or "")
        calls.extend(message.get("tool_calls") or [])
        last = chunk
    printer.end_thinking()
    out: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if "".join(thinking):
        out["thinking"] = "".join(thinking)
    if calls:
        out["tool_calls"] = calls
    return out, last


def stats(final: dict[str, Any]) -> str:
    """ollama's `--verbose` summary of a response's timings."""
    lines = []

    def rate(count: int, ns: int) -> str:
        return f"{count / (ns / 1e9):.2f} tokens/s"

    if final.get("total_duration"):
        lines.append(f"total duration:       {go_duration(final['total_duration'])}")
    if final.get("load_duration"):
        lines.append(f"load duration:        {go_duration(final['load_duration'])}")
    if final.get("prompt_eval_count"):
        lines.append(f"prompt eval count:    {final['prompt_eval_count']} token(s)")
    if final.get("prompt_eval_duration"):
        lines.append(f"prompt eval duration: {go_duration(final['prompt_eval_duration'])}")
        lines.append(f"prompt eval rate:     {rate(final.get('prompt_eval_count') or 0, final['prompt_eval_duration'])}")
    if final.get("eval_count"):
        lines.append(f"eval count:           {final['eval_count']} token(s)")
    if final.get("eval_duration"):
        lines.append(f"eval duration:        {go_duration(final['eval_duration'])}")
        lines.append(f"eval rate:            {rate(final.get('eval_count') or 0, final['eval_duration'])}")
    return "".join(line + "\n" for line in lines)


# -- the session ---------------------------------------------------------------------------


class Session:
    """One interactive chat: history, session settings, and the commands that change them."""

    def __init__(self, client: Client, model: str, write: Write = _out, *,
                 write_err: Write | None = None, format_: Any = None, think: bool | str | None = None,
                 hide_thinking: bool = False, verbose: bool = False, keep_alive: Any = None) -> None:
        self.client = client
        self.model = model
        self.write = write
        self.write_err = write_err or write
        self.messages: list[dict[str, Any]] = []
        self.options: dict[str, Any] = {}
        self.system: str | None = None
        self.format: Any = format_
        self.think = think
        self.hide_thinking = hide_thinking
        self.verbose = verbose
        self.keep_alive = keep_alive
        self.history = True

    async def load(self) -> None:
        body: dict[str, Any] = {"model": self.model, "messages": []}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        await self.client.request("POST", "/api/chat", body)

    async def command(self, line: str) -> bool:
        """Run a /command; return False to leave the session."""
        words = line.split()
        name = words[0].lower()
        if name in ("/bye", "/exit"):
            return False
        if name in ("/?", "/help"):
            topic = words[1].lower() if len(words) > 1 else ""
            text = {"set": SET_HELP, "show": SHOW_HELP, "shortcuts": SHORTCUTS,
                    "shortcut": SHORTCUTS}.get(topic, HELP)
            self.write(text + "\n")
        elif name == "/clear":
            self.messages.clear()
            self.write("Cleared session context\n")
        elif name == "/set":
            self._set(line.split(None, 1)[1] if len(words) > 1 else "")
        elif name == "/show":
            await self._show(words[1:])
        elif name == "/load":
            await self._load(words[1:])
        else:
            self.write(f"Unknown command '{words[0]}'. Type /? for help\n")
        return True

    def _set(self, rest: str) -> None:
        words = rest.split()
        if not words:
            self.write(SET_HELP + "\n")
            return
        what = words[0].lower()
        if what == "parameter":
            self._set_parameter(words[1:])
        elif what == "system":
            text = rest.split(None, 1)[1] if len(words) > 1 else ""
            text = text.strip()
            if len(text) >= 6 and text.startswith('"""') and text.endswith('"""'):
                text = text[3:-3]
            elif len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            self.system = text or None
            self.write("Set system message.\n" if text else "Cleared system message.\n")
        elif what in ("verbose", "quiet"):
            self.verbose = what == "verbose"
            self.write(f"Set '{what}' mode.\n")
        elif what in ("wordwrap", "nowordwrap"):
            self.write(f"Set '{what}' mode.\n")
        elif what in ("history", "nohistory"):
            self.history = what == "history"
            self.write(f"Set '{what}' mode.\n")
        elif what == "format":
            if len(words) < 2 or words[1].lower() != "json":
                self.write("Invalid or missing format. For 'json' mode use '/set format json'\n")
                return
            self.format = "json"
            self.write("Set format to 'json' mode.\n")
        elif what == "noformat":
            self.format = None
            self.write("Disabled format.\n")
        elif what == "think":
            level = words[1].lower() if len(words) > 1 else ""
            if level and level not in ("high", "medium", "low", "true", "false"):
                self.write(f"Invalid think level '{level}': use high, medium or low\n")
                return
            if level in ("", "true"):
                self.think = True
                self.write("Set 'think' mode.\n")
            elif level == "false":
                self.think = False
                self.write("Set 'nothink' mode.\n")
            else:
                self.think = level
                self.write(f"Set 'think' mode to '{level}'.\n")
        elif what == "nothink":
            self.think = False
            self.write("Set 'nothink' mode.\n")
        else:
            self.write(f"Unknown command '/set {words[0]}'. Type /? for help\n")

    def _set_parameter(self, args: list[str]) -> None:
        if len(args) < 2:
            self.write("Usage:\n  /set parameter <name> <value>\n")
            return
        key, values = args[0], args[1:]
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

    def _session_parameters(self) -> str:
        rows = []
        for key, value in self.options.items():
            for v in value if isinstance(value, list) else [value]:
                rows.append(f"{key:<30} {json.dumps(v) if isinstance(v, str) else v}")
        return "\n".join(rows)

    async def _show(self, args: list[str]) -> None:
        what = args[0].lower() if args else "info"
        if what not in ("info", "license", "modelfile", "parameters", "system", "template"):
            self.write(f"Unknown command '/show {args[0]}'. Type /? for help\n")
            return
        if what == "system" and self.system:
            self.write(self.system + "\n")
            return
        info = await self.client.request("POST", "/api/show", {"model": self.model})
        if what == "info":
            from api.cli import summary

            self.write(summary(info) + "\n")
        elif what == "parameters":
            model_params = (info.get("parameters") or "").rstrip("\n")
            session = self._session_parameters()
            if not model_params and not session:
                self.write("No parameters were specified for this model.\n")
                return
            if model_params:
                self.write("Model defined parameters:\n" + model_params + "\n")
            if session:
                self.write(("\n" if model_params else "") + "User defined parameters:\n" + session + "\n")
        else:
            text = info.get(what) or f"No {what} was specified for this model."
            self.write(text.rstrip("\n") + "\n")

    async def _load(self, args: list[str]) -> None:
        if not args:
            self.write("Usage:\n  /load <modelname>\n")
            return
        previous = self.model
        self.model = args[0]
        self.write(f"Loading model '{self.model}'\n")
        try:
            await self.load()
        except ClientError as exc:
            self.model = previous
            self.write(f"Couldn't load model: {exc}\n")

    def request(self, text: str) -> dict[str, Any]:
        """The /api/chat body for the next message (`text` appended to the history)."""
        messages = list(self.messages)
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        messages.append({"role": "user", "content": text})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if self.options:
            body["options"] = self.options
        if self.format is not None:
            body["format"] = self.format
        if self.think is not None:
            body["think"] = self.think
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    async def ask(self, text: str) -> None:
        """One answer, printed as it streams; the exchange joins the history only when the
        answer is complete (an interrupted answer leaves the history as it was)."""
        reply, final = await stream_chat(self.client, self.request(text), self.write, self.hide_thinking)
        self.messages.append({"role": "user", "content": text})
        self.messages.append(reply)
        self.write("\n\n")
        if self.verbose:
            self.write_err(stats(final))


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


# -- running coroutines from the synchronous chat loop ---------------------------------------


class LoopRunner:
    """One event loop for a whole chat, driven from the (blocking) prompt.

    While an answer streams, Ctrl-C cancels just that request (closing the connection,
    which stops the generation in the server); at the prompt, Ctrl-C is Python's usual
    KeyboardInterrupt, handled by the chat loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def interruptible(self, coro: Coroutine[Any, Any, Any]) -> bool:
        """Run `coro`; True when it finished, False when Ctrl-C stopped it."""
        task = self.loop.create_task(coro)
        installed = False
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            self.loop.add_signal_handler(signal.SIGINT, task.cancel)
            installed = True
        try:
            self.loop.run_until_complete(task)
            return True
        except asyncio.CancelledError:
            return False
        finally:
            if installed:
                self.loop.remove_signal_handler(signal.SIGINT)

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def chat_loop(session: Session, read_line: ReadLine, runner: LoopRunner,
              line_buffer: Callable[[], str] = lambda: "") -> int:
    """The interactive chat; returns the exit status."""
    runner.run(session.load())
    interrupted = False
    while True:
        try:
            text = read_message(read_line)
        except KeyboardInterrupt:
            if line_buffer():
                session.write("\n")  # Ctrl-C with text typed: drop the line
                interrupted = False
                continue
            if interrupted:
                session.write("\n")
                return 0
            session.write(f"\n{EXIT_HINT}\n\n")
            interrupted = True
            continue
        interrupted = False
        if text is None:
            session.write("\n")
            return 0
        if not text.strip():
            continue
        if text.startswith("/"):
            if not runner.run(session.command(text)):
                return 0
            continue
        try:
            finished = runner.interruptible(session.ask(text))
        except ClientError as exc:
            session.write(f"\nError: {exc}\n\n")
            continue
        if not finished:
            session.write("\n\n")


# -- readline ----------------------------------------------------------------------------


class LineEditor:
    """input() with GNU readline: line editing, and history kept in ~/.corral/history."""

    def __init__(self, history_file: Path | None = HISTORY_FILE) -> None:
        self.readline: Any = None
        self.history_file = history_file.expanduser() if history_file else None
        try:
            import readline
        except ImportError:  # not built with readline: plain input() still works
            return
        self.readline = readline
        if self.history_file is not None:
            with contextlib.suppress(OSError):
                readline.read_history_file(self.history_file)
        readline.set_history_length(1000)

    def read(self, prompt: str) -> str:
        return input(prompt)

    def buffer(self) -> str:
        return self.readline.get_line_buffer() if self.readline is not None else ""

    def save(self) -> None:
        if self.readline is None or self.history_file is None:
            return
        with contextlib.suppress(OSError):
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            self.readline.write_history_file(self.history_file)


# -- the command ---------------------------------------------------------------------------


def _keep_alive(text: str | None) -> float | str | None:
    # ollama's CLI parses the flag itself; a bare number means seconds.
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _format(text: str | None) -> Any:
    """--format: `json`, or a JSON schema given inline."""
    if text is None or text == "":
        return None
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            raise ClientError("--format: the schema is not valid JSON") from None
    if text != "json":
        raise ClientError(f"--format {text!r}: use json or a JSON schema")
    return text


def _think(text: str | None) -> bool | str | None:
    if text is None:
        return None
    value = text.lower()
    if value in ("true", "false"):
        return value == "true"
    if value in ("high", "medium", "low"):
        return value
    raise ClientError(f"--think {text!r}: use true, false, high, medium or low")


async def ensure_model(client: Client, model: str, insecure: bool) -> None:
    """Pull `model` first when the server does not have it, as `ollama run` does."""
    try:
        await client.request("POST", "/api/show", {"model": model})
        return
    except ClientError as exc:
        if exc.status != 404:
            raise
    renderer = ProgressRenderer(sys.stderr)
    try:
        async for item in client.stream("POST", "/api/pull", {"model": model, "insecure": insecure,
                                                              "stream": True}):
            renderer.update(item)
    finally:
        renderer.close()


def cmd_run(args: argparse.Namespace) -> int:
    prompt = " ".join(args.prompt)
    piped = not sys.stdin.isatty()
    if piped:
        extra = sys.stdin.read()
        prompt = f"{prompt}\n\n{extra}".strip() if prompt else extra
    keep_alive = _keep_alive(args.keepalive)
    format_ = _format(args.format)
    think = _think(args.think)
    runner = LoopRunner()
    client = Client()
    try:
        runner.run(client.__aenter__())
        runner.run(ensure_model(client, args.model, args.insecure))
        session = Session(client, args.model, _out, write_err=_err, format_=format_, think=think,
                          hide_thinking=args.hidethinking, verbose=args.verbose, keep_alive=keep_alive)
        if piped or args.prompt:
            if not prompt.strip():
                runner.run(session.load())  # nothing to answer: load the model, as ollama does
                return 0
            _reply, final = runner.run(stream_chat(client, session.request(prompt), _out, args.hidethinking))
            _out("\n")
            if args.verbose:
                _err("\n" + stats(final))
            return 0
        editor = LineEditor()
        try:
            return chat_loop(session, editor.read, runner, editor.buffer)
        finally:
            editor.save()
    finally:
        with contextlib.suppress(Exception):
            runner.run(client.__aexit__(None, None, None))
        runner.close()


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
    p = sub.add_parser("run", help="run a model: one answer, or an interactive chat (flags go anywhere)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("prompt", nargs="*", metavar="PROMPT", default=[])
    p.add_argument("--keepalive", metavar="DURATION", help="how long the model stays loaded (e.g. 5m, 0, -1)")
    p.add_argument("--verbose", action="store_true", help="show timings for each response")
    p.add_argument("--format", metavar="FORMAT", help="response format: json, or a JSON schema")
    p.add_argument("--think", nargs="?", const="true", metavar="LEVEL",
                   help="let a thinking model think first (true, false, high, medium, low)")
    p.add_argument("--hidethinking", action="store_true", help="do not print the model's thinking")
    p.add_argument("--insecure", action="store_true", help="use plain http when the model must be pulled")
    p.add_argument("--nowordwrap", action="store_true", help="accepted for ollama compatibility (corral never wraps)")
    p.set_defaults(func=cmd_run, words_anywhere="prompt")

    p = sub.add_parser("ps", help="list running models")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("stop", help="stop a running model")
    p.add_argument("model", metavar="MODEL")
    p.set_defaults(func=cmd_stop)




def normalize_argv(argv: list[str]) -> list[str]:
    """`--think` alone means `--think=true`, so it never takes the next word as its value
    (ollama's flag takes a level only as `--think=high`)."""
    return ["--think=true" if a == "--think" else a for a in argv]
