"""controlplane.core.config: WHIN_REDIS_URL's forms, each refusal a sentence."""

import pytest

from controlplane.core.config import ConfigError, Settings


@pytest.mark.parametrize("url", ["redis://10.0.0.5:6379/0", "rediss://redis.lan:6380/1", "unix:///run/redis.sock?db=2",
                                 "redis+sentinel://s1:26379,s2:26379/whin/0"])
def test_every_redis_url_form_is_taken(url):
    settings = Settings.from_env({"WHIN_REDIS_URL": url})
    assert settings.redis_url == url and not settings.embedded_redis


@pytest.mark.parametrize("url, words", [
    ("10.0.0.5:6379", "must start with redis://"),
    ("http://redis.lan", "got http://"),
    ("redis+sentinel://s1:26379,s2:26379", "names the service its Sentinels watch"),
    ("redis+sentinel://s1:26379/", "names the service its Sentinels watch"),
])
def test_a_redis_url_that_cannot_work_stops_start_up_with_a_sentence(url, words):
    with pytest.raises(ConfigError, match=words):
        Settings.from_env({"WHIN_REDIS_URL": url})
