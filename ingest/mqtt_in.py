"""MQTT side of the gateway (paho-mqtt 2.x, MQTT 5).

* fixed client id and a persistent session: `clean_start=False` with a Session Expiry Interval, so
  the broker keeps the subscription and queues QoS 1 messages while the gateway is away;
* QoS 1 subscription, optionally shared (`$share/<group>/parkmon/<park>/+/readings`) so several
  gateways split one stream;
* manual acknowledgement (`manual_ack_set(True)`): `ack(mid, generation)` is called by the gateway
  once Kafka has acknowledged every record made from the message. A message that is never
  acknowledged is redelivered by the broker on the next connection of the session.
* `generation` counts connections: an acknowledgement is sent only on the connection the message
  arrived on. After a reconnect the broker resends unacknowledged messages itself (same packet id),
  and the gateway's deduplication recognises the readings.
* credentials and TLS from settings (environment), never logged.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from parkmon.config import GatewaySettings, MqttSettings
from parkmon.errors import ConfigError

log = logging.getLogger("parkmon.gateway.mqtt")

#: (topic, payload, mid, qos, generation) -> None; runs on paho's network thread
MessageHandler = Callable[[str, bytes, int, int, int], None]


def subscription_topic(park_id: str, share_group: str | None) -> str:
    base = f"parkmon/{park_id}/+/readings"
    return f"$share/{share_group}/{base}" if share_group else base


class MqttIn:
    def __init__(self, mqtt_settings: MqttSettings, gw: GatewaySettings, subscription: str,
                 on_message: MessageHandler,
                 on_connection_change: Callable[[bool], None] | None = None) -> None:
        self.settings = mqtt_settings
        self.subscription = subscription
        self._handler = on_message
        self._on_conn_change = on_connection_change
        self.generation = 0
        self.connected = False
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=mqtt_settings.client_id,
                        protocol=mqtt.MQTTv5)
        c.manual_ack_set(True)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        if mqtt_settings.username:
            pw = mqtt_settings.password.get_secret_value() if mqtt_settings.password else None
            c.username_pw_set(mqtt_settings.username, pw)
        if mqtt_settings.tls:
            try:
                c.tls_set(ca_certs=mqtt_settings.tls_ca, certfile=gw.tls_cert, keyfile=gw.tls_key,
                          cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ValueError, ssl.SSLError) as exc:
                raise ConfigError(f"MQTT TLS settings: {exc} (PARKMON_MQTT_TLS_CA, "
                                  f"PARKMON_GATEWAY_TLS_CERT / _KEY)") from exc
            if gw.tls_insecure:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_connect_fail = self._on_connect_fail
        self._client = c
        self._keepalive = gw.keepalive_s
        self._receive_maximum = gw.receive_maximum
        self._lock = threading.Lock()
        self._threaded = False

    # -- lifecycle ----------------------------------------------------------------------------
    def _connect_async(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = max(1, min(65535, self._receive_maximum))
        self._client.connect_async(self.settings.host, self.settings.port,
                                   keepalive=self._keepalive, clean_start=False, properties=props)

    def start(self) -> None:
        """Connect and run the network loop on a background thread."""
        self._connect_async()
        self._threaded = True
        self._client.loop_start()

    def run_forever(self) -> None:
        """Connect and run the network loop on the calling thread until `stop()` (reconnecting
        after connection losses). Keeps the hot path on the main thread, where profilers look."""
        self._connect_async()
        self._threaded = False
        self._client.loop_forever(retry_first_connection=True)

    def stop(self) -> None:
        """Disconnect (normal disconnect: the session and its unacknowledged messages stay)."""
        try:
            self._client.disconnect()
        finally:
            if self._threaded:
                self._client.loop_stop()

    def ack(self, mid: int, qos: int, generation: int) -> bool:
        """Acknowledge a message if the connection it came on is still the current one."""
        if qos == 0:
            return True
        with self._lock:
            if generation != self.generation or not self.connected:
                return False
        self._client.ack(mid, qos)
        return True

    # -- paho callbacks (network thread) ------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"connect refused: {reason_code}"
            log.error("mqtt connect refused", extra={"event": "mqtt_refused",
                                                     "reason": str(reason_code)})
            return
        with self._lock:
            self.generation += 1
            self.connected = True
        log.info("mqtt connected", extra={"event": "mqtt_connected",
                                          "session_present": bool(flags.session_present),
                                          "generation": self.generation,
                                          "subscription": self.subscription})
        client.subscribe(self.subscription, qos=1)
        if self._on_conn_change is not None:
            self._on_conn_change(True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        tls = "TLS" if self.settings.tls else "plain TCP"
        self.last_error = (f"cannot connect to {self.settings.host}:{self.settings.port} "
                           f"({tls}): broker down, wrong port, or TLS/certificate problem")
        log.warning("mqtt connection failed, retrying", extra={
            "event": "mqtt_connect_failed", "broker": f"{self.settings.host}:{self.settings.port}",
            "tls": self.settings.tls})

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            self.last_error = f"subscription refused: {failed[0]}"
            log.error("mqtt subscription refused", extra={"event": "mqtt_subscribe_refused",
                                                          "reason": str(failed[0]),
                                                          "subscription": self.subscription})
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        with self._lock:
            self.connected = False
        self.subscribed.clear()
        log.warning("mqtt disconnected", extra={"event": "mqtt_disconnected",
                                                "reason": str(reason_code)})
        if self._on_conn_change is not None:
            self._on_conn_change(False)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # `msg.topic` raises on a topic that is not UTF-8, and an exception in this callback would
        # end paho's loop: decode leniently instead (the validator then refuses it `wrong_topic`).
        # Mosquitto itself disconnects a client publishing such a topic; this is the second line.
        topic = msg._topic.decode("utf-8", "backslashreplace")
        self._handler(topic, bytes(msg.payload), msg.mid, msg.qos, self.generation)
