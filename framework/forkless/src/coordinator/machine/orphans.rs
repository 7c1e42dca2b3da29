//! Connections a stand-in accepted for a shard that is down: handed to the
//! listening shards in turn (round robin), kept while none listens, dropped
//! when the process stops.

use super::{Action, Machine};
use crate::shard::ShardId;

impl<O> Machine<O> {
    /// Hands waiting orphans to listening shards, in turn.
    pub(super) fn place_orphans(&mut self) {
        while let Some(orphan) = self.orphans.pop_front() {
            let count = self.shards.len();
            let adopter = (0..count)
                .map(|i| (self.next_adopter + i) % count)
                .find_map(|i| Some((i, self.shards[i].listening()?)));
            let Some((adopter, incarnation)) = adopter else {
                self.orphans.push_front(orphan);
                return;
            };
            self.next_adopter = adopter + 1;
            self.push(Action::Adopt {
                shard: ShardId::new(adopter),
                incarnation,
                orphan,
            });
        }
    }

    /// The adopter's thread is ending: it takes no more, the next one gets
    /// the connection.
    pub(super) fn on_adopt_refused(&mut self, id: ShardId, number: u32, orphan: O) {
        if let Some(current) = self
            .shards
            .get_mut(id.get())
            .and_then(|s| s.current.as_mut())
            .filter(|c| c.number == number)
        {
            current.listening = false;
        }
        self.orphans.push_front(orphan);
        self.place_orphans();
    }
}
