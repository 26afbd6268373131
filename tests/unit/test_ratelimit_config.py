"""RATELIMIT_STORAGE_URI: memory:// by default, a Redis URL to share counters; anything else stops startup."""

import pytest

from app.config import ConfigError, defaults, from_env


def test_rate_limits_are_counted_in_memory_by_default():
    assert defaults()["RATELIMIT_STORAGE_URI"] == "memory://"


@pytest.mark.parametrize("uri", ["memory://", "redis://127.0.0.1:6379/0", "rediss://:secret@cache:6380/1"])
def test_memory_and_redis_are_accepted(uri):
    assert from_env({"RATELIMIT_STORAGE_URI": uri}) == {"RATELIMIT_STORAGE_URI": uri}


@pytest.mark.parametrize("uri", ["memcached://cache:11211", "127.0.0.1:6379", "redis", "   "])
def test_other_storages_name_the_variable(uri):
    with pytest.raises(ConfigError, match="RATELIMIT_STORAGE_URI"):
        from_env({"RATELIMIT_STORAGE_URI": uri})
