use super::*;
use crate::balancer::Weight;

#[test]
fn a_short_sequence_passes() {
    let ops = [
        KeyedOp::Reset {
            len: 12,
            weights: vec![Weight::One, Weight::Small(3), Weight::Zero],
        },
        KeyedOp::Begin { index: 4 },
        KeyedOp::Begin { index: 4 },
        KeyedOp::Eject { index: 2 },
        KeyedOp::Walk {
            key: 77,
            exclude: 0b1,
        },
        KeyedOp::Remove {
            index: 0,
            rebuild: false,
        },
        KeyedOp::Pick {
            key: 5,
            exclude: 0,
            kept: false,
        },
    ];
    for kind in KeyedKind::ALL {
        run_keyed(kind, &ops).unwrap();
    }
}
