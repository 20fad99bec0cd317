"""Settings: the config file, the models that validate it with the run's Params, the trigger form."""

from ml_cache.settings.config import ConfigError, load_config
from ml_cache.settings.models import BuildSettings, JanitorSettings, RolloutSettings
from ml_cache.settings.resolve import resolve_build_settings, resolve_janitor_settings, resolve_rollout_settings

__all__ = ["BuildSettings", "ConfigError", "JanitorSettings", "RolloutSettings", "load_config",
           "resolve_build_settings", "resolve_janitor_settings", "resolve_rollout_settings"]
