import pytest

from raylign.timeline import Interval, busy_shares, critical_path


def two_cycles(overlap: bool) -> list[Interval]:
    """Two cycles on one engine, one judge replica and the learner, as measured on shared
    cores: 4 s to generate a stage, 1 s to judge it, 0.5 s to build pairs, 6 s to train. On-policy,
    cycle 2's answers wait for cycle 1's policy; overlapped, the base model gives them while
    cycle 1 trains."""
    cycle_1 = [
        Interval("generator.0", 1, "train", 0, 0, 4, policy=0), Interval("judge.rules.7", 1, "train", 0, 4, 5),
        Interval("driver", 1, "build_data", None, 5, 5.5), Interval("learner", 1, "train", None, 5.5, 11.5),
    ]
    if overlap:
        return cycle_1 + [
            Interval("generator.0", 2, "train", 0, 5.5, 9.5, policy=0),
            Interval("judge.rules.7", 2, "train", 0, 9.5, 10.5),
            Interval("generator.0", 1, "eval", 0, 11.5, 15.5, policy=1),
            Interval("judge.rules.7", 1, "eval", 0, 15.5, 16.5),
            Interval("driver", 2, "build_data", None, 16.5, 17), Interval("learner", 2, "train", None, 17, 23),
        ]
    return cycle_1 + [
        Interval("generator.0", 1, "eval", 0, 11.5, 15.5, policy=1),
        Interval("judge.rules.7", 1, "eval", 0, 15.5, 16.5),
        Interval("generator.0", 2, "train", 0, 16.5, 20.5, policy=1),
        Interval("judge.rules.7", 2, "train", 0, 20.5, 21.5),
        Interval("driver", 2, "build_data", None, 21.5, 22), Interval("learner", 2, "train", None, 22, 28),
    ]


def test_the_critical_path_is_the_longest_chain_of_dependent_intervals():
    on_policy = critical_path(two_cycles(overlap=False))
    # Cycle 1 (4 + 1 + 0.5 + 6), the evaluation's answers (4), then cycle 2 on the same engine
    # (4 + 1 + 0.5 + 6): the evaluation's judging (1 s) is off the chain.
    assert on_policy.seconds == pytest.approx(27.0)
    assert [i.actor for i in on_policy.chain] == ["generator.0", "judge.rules.7", "driver", "learner", "generator.0",
                                                 "generator.0", "judge.rules.7", "driver", "learner"]
    overlapped = critical_path(two_cycles(overlap=True))
    # Cycle 1's training (11.5), its evaluation (4 + 1), the build and cycle 2's training (0.5 + 6):
    # cycle 2's answers came off the chain.
    assert overlapped.seconds == pytest.approx(23.0)
    assert overlapped.by_role() == pytest.approx({"generator": 8.0, "judge": 2.0, "driver": 1.0, "learner": 12.0})


def test_busy_shares_are_per_actor_of_the_wall_time():
    shares = busy_shares([Interval("generator.0", 1, "train", 0, 0, 5), Interval("generator.1", 1, "train", 1, 0, 3),
                          Interval("learner", 1, "train", None, 5, 10)], wall_s=10)
    assert shares == {"generator": 0.4, "learner": 0.5}
