from wire import Connection, Hello, Role


def test_hello_round_trip() -> None:
    agent, relay = Connection(Role.AGENT), Connection(Role.RELAY)
    agent.send_hello(Hello("demo"))
    [message] = agent.data_to_send()
    assert relay.receive(message)[0].hello.name == "demo"  # type: ignore[union-attr]
