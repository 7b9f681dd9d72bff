//! berthd, the Berth node agent.

pub mod archive;

pub fn main() -> i32 {
    0
}
