"""Graph contexts: ``with`` blocks nest like any context (re-entering a graph inside another
does not change where later nodes go), and each thread has its own default graph and scopes."""

import threading

import pytest

import fastgraph as fg


def test_reentering_a_graph_inside_another_leaves_the_outer_block_as_it_was():
    outer, inner = fg.Graph(), fg.Graph()
    with outer:
        with inner:
            with outer:
                assert fg.get_default_graph() is outer
            node = fg.Variable((1, 1), name="after")
            assert fg.get_default_graph() is inner
        assert fg.get_default_graph() is outer
    assert node.graph is inner
    assert [n.name for n in inner.nodes] == ["after"] and outer.nodes == []


def test_a_block_in_one_thread_does_not_decide_where_another_threads_nodes_go():
    mine = fg.Graph()
    seen = {}

    def build():
        seen["graph"] = fg.Variable((1, 1)).graph
        seen["default"] = fg.get_default_graph()

    with mine:
        thread = threading.Thread(target=build)
        thread.start()
        thread.join()
    assert seen["graph"] is seen["default"] is not mine
    assert mine.nodes == []


def test_threads_building_at_the_same_time_each_fill_their_own_graph():
    graphs = [fg.Graph(), fg.Graph()]
    entered, built = threading.Barrier(2), threading.Barrier(2)
    errors = []

    def build(index):
        try:
            with graphs[index], fg.name_scope(f"scope{index}"):
                entered.wait(timeout=10)  # both blocks are open before either builds
                fg.Variable((1, 1), name="v")
                built.wait(timeout=10)
        except Exception as error:  # a failure in a thread would otherwise be lost
            errors.append(error)

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [[node.name for node in graph.nodes] for graph in graphs] == [["scope0/v"],
                                                                         ["scope1/v"]]


def test_a_name_scope_must_be_a_string():
    for scope in (3, "", None):
        with pytest.raises(ValueError, match="name_scope takes a non-empty string"):
            with fg.name_scope(scope):
                pass
