"""`director config` on an enrolled client: values kept in the home (issue 15 item 8)."""

from __future__ import annotations

from director.config import load_settings, with_home

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def _eff(cli=None, environ=None):
    return load_settings(cli=cli or {"home": "/tmp/x"}, environ=environ or {}, config_path=None,
                         system_config="/nonexistent/config.yaml")


def test_kept_values_fill_what_nothing_else_set_and_the_kept_name_is_the_one_used():
    eff = with_home(_eff(), address="10.0.0.2:5555", server_key=KEY, name="web1")
    table = {k: (v, src) for k, v, src in eff.as_table()}
    assert table["server_address"] == ("10.0.0.2:5555", "home")
    assert table["server_key"] == (KEY, "home")
    assert table["name"] == ("web1", "home")
    assert eff.as_json()["port"] == {"value": 5555, "source": "default"}


def test_an_address_given_explicitly_wins_as_it_does_for_the_client():
    eff = with_home(_eff(environ={"DIRECTOR_SERVER_ADDRESS": "10.9.9.9"}),
                    address="10.0.0.2:5555", server_key="", name="")
    assert eff.as_json()["server_address"] == {"value": "10.9.9.9", "source": "env"}
    assert eff.as_json()["name"]["source"] == "default"


def test_nothing_kept_changes_nothing():
    eff = _eff()
    assert with_home(eff, address="", server_key="", name="") is eff
