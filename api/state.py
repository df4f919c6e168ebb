"""Typed keys for what the application object carries."""

from __future__ import annotations

from aiohttp import web

from api.settings import Settings
from runtime.scheduler import Scheduler
from runtime.service import InferenceService
from store.store import Store

STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", Settings)
SCHEDULER = web.AppKey("scheduler", Scheduler)
INFERENCE = web.AppKey("inference", InferenceService)
