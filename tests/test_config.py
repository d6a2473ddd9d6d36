"""``Config.validate``: each setting that cannot work is named, with what it must be."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from hello_asgi.config import Config

# One bad value of each rule, and the message it must give (a regular expression).
BAD = [
    ({"interface": "asgi4"}, r"^interface must be auto, asgi3, asgi2 or wsgi, not 'asgi4'$"),
    ({"lifespan": "maybe"}, r"^lifespan must be auto, on or off, not 'maybe'$"),
    ({"loop": "trio"}, r"^loop must be auto, asyncio or uvloop, not 'trio'$"),
    ({"tls_min_version": "1.1"}, r"^tls_min_version must be 1.2 or 1.3, not '1.1'$"),
    ({"root_path": "api"}, r"^root_path must start with '/' and not end with one: 'api'$"),
    ({"root_path": "/api/"}, r"^root_path must start with '/' and not end with one: '/api/'$"),
    ({"keep_alive_timeout": 0}, r"^keep_alive_timeout must be positive$"),
    ({"request_head_timeout": -1}, r"^request_head_timeout must be positive$"),
    ({"graceful_timeout": 0}, r"^graceful_timeout must be positive$"),
    ({"close_timeout": 0}, r"^close_timeout must be positive$"),
    ({"body_timeout": 0}, r"^body_timeout must be positive$"),
    ({"h2_stall_timeout": 0}, r"^h2_stall_timeout must be positive$"),
    ({"ws_handshake_timeout": 0}, r"^ws_handshake_timeout must be positive$"),
    ({"max_request_line": 0}, r"^max_request_line must be at least 1$"),
    ({"max_head_size": 0}, r"^max_head_size must be at least 1$"),
    ({"max_header_count": 0}, r"^max_header_count must be at least 1$"),
    ({"max_connections": 0}, r"^max_connections must be at least 1$"),
    ({"body_buffer_size": 0}, r"^body_buffer_size must be at least 1$"),
    ({"max_body_drain": 0}, r"^max_body_drain must be at least 1$"),
    ({"backlog": 0}, r"^backlog must be at least 1$"),
    ({"h2_max_concurrent_streams": 0}, r"^h2_max_concurrent_streams must be at least 1$"),
    ({"h2_max_resets": 0}, r"^h2_max_resets must be at least 1$"),
    ({"h2_max_control_frames": 0}, r"^h2_max_control_frames must be at least 1$"),
    ({"h2_max_empty_frames": 0}, r"^h2_max_empty_frames must be at least 1$"),
    ({"ws_max_message_size": 0}, r"^ws_max_message_size must be at least 1$"),
    ({"ws_max_frame_size": 0}, r"^ws_max_frame_size must be at least 1$"),
    ({"ws_max_queue": 0}, r"^ws_max_queue must be at least 1$"),
    ({"max_requests": -1}, r"^max_requests and max_requests_jitter must be 0 \(off\) or more$"),
    ({"max_requests_jitter": -1}, r"^max_requests and max_requests_jitter must be 0 \(off\) or more$"),
    ({"max_requests_per_connection": -1}, r"^max_requests_per_connection must be 0 \(no limit\) or more$"),
    ({"h2_initial_window_size": 65534}, r"^h2_initial_window_size must be from 65535 to 2\*\*31-1$"),
    ({"h2_initial_window_size": 2**31, "h2_max_window_size": 2**31},
     r"^h2_initial_window_size must be from 65535 to 2\*\*31-1$"),
    ({"h2_initial_window_size": 100000, "h2_max_window_size": 99999},
     r"^h2_max_window_size must be from h2_initial_window_size to 2\*\*31-1$"),
    ({"h2_max_window_size": 2**31}, r"^h2_max_window_size must be from h2_initial_window_size to 2\*\*31-1$"),
    ({"h2_max_frame_size": 16383}, r"^h2_max_frame_size must be from 16384 to 2\*\*24-1$"),
    ({"h2_max_frame_size": 2**24}, r"^h2_max_frame_size must be from 16384 to 2\*\*24-1$"),
    ({"ws_ping_interval": -1}, r"^ws_ping_interval and ws_ping_timeout must be 0 \(off\) or more$"),
    ({"ws_ping_timeout": -1}, r"^ws_ping_interval and ws_ping_timeout must be 0 \(off\) or more$"),
    ({"request_timeout": 0}, r"^request_timeout must be positive, or None for no limit$"),
    ({"require_client_cert": True}, r"^require_client_cert needs ca_certs"),
    ({"certfile": "cert.pem"}, r"^a TLS certificate and key go together: give both or neither$"),
    ({"keyfile": "key.pem"}, r"^a TLS certificate and key go together: give both or neither$"),
    ({"forwarded_allow_ips": ["10.0.0.0/33"]}, r"^forwarded_allow_ips: '10.0.0.0/33' is not an address"),
    ({"max_request_line": 20000}, r"^max_request_line cannot exceed max_head_size$"),
    ({"access_log_format": "%(h)s %(zz)s"}, r"zz"),
]

# Values at the edges of what each rule allows.
GOOD: list[dict[str, Any]] = [
    {},
    {"root_path": "/api", "lifespan": "off", "interface": "asgi2", "loop": "asyncio", "tls_min_version": "1.3"},
    {"max_requests": 0, "max_requests_jitter": 0, "max_requests_per_connection": 0, "request_timeout": None},
    {"h2_initial_window_size": 2**31 - 1, "h2_max_window_size": 2**31 - 1, "h2_max_frame_size": 2**24 - 1},
    {"ws_ping_interval": 0, "ws_ping_timeout": 0, "request_timeout": 0.5},
    {"certfile": "cert.pem", "keyfile": "key.pem", "ca_certs": "ca.pem", "require_client_cert": True},
    {"max_request_line": 16384, "access_log_format": "json", "forwarded_allow_ips": ["*", "unix", "10.0.0.0/8"]},
]


class ValidateTests(unittest.TestCase):
    def test_each_bad_setting_is_named(self) -> None:
        for settings, message in BAD:
            with self.subTest(**{name: repr(value) for name, value in settings.items()}):
                with self.assertRaisesRegex(ValueError, message):
                    Config(**settings).validate()

    def test_settings_at_the_edges_pass(self) -> None:
        for settings in GOOD:
            with self.subTest(**{name: repr(value) for name, value in settings.items()}):
                Config(**settings).validate()
