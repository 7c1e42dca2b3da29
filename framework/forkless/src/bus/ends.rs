//! One shard incarnation's ends of the bus, one per message type, made on
//! first use.
//!
//! Contract: `!Send`, one per incarnation, on its shard. Every `Bus<M, R>`
//! handle of one type on one incarnation shares one end (and so one set of
//! rings and one receive queue).

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::registry::Registry;
use super::{Bus, LocalEnd};
use crate::ShardId;
use crate::shard::ShardCounters;

/// The bus as one shard incarnation sees it.
pub(crate) struct ShardBus {
    me: ShardId,
    incarnation: u32,
    registry: Arc<Registry>,
    /// What the app's traffic is counted in.
    counters: Arc<ShardCounters>,
    /// How long `recv` and a call's reply wait poll before parking.
    spin: Duration,
    ends: RefCell<HashMap<TypeId, Rc<dyn Any>>>,
}

impl std::fmt::Debug for ShardBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardBus")
            .field("me", &self.me)
            .field("incarnation", &self.incarnation)
            .field("types", &self.ends.borrow().len())
            .finish_non_exhaustive()
    }
}

impl ShardBus {
    pub(crate) fn new(
        me: ShardId,
        incarnation: u32,
        registry: Arc<Registry>,
        counters: Arc<ShardCounters>,
        spin: Duration,
    ) -> Self {
        Self {
            me,
            incarnation,
            registry,
            counters,
            spin,
            ends: RefCell::new(HashMap::new()),
        }
    }

    /// The handle for messages `M` answered with `R`, counted in the
    /// shard's bus counters.
    pub(crate) fn bus<M: Send + 'static, R: Send + 'static>(&self) -> Bus<M, R> {
        self.end(&self.counters)
    }

    /// A bus for the framework's own traffic (connections handed between
    /// shards): its messages stay out of the shard's bus counters, which
    /// count the app's.
    pub(crate) fn framework_bus<M: Send + 'static>(&self) -> Bus<M> {
        self.end(&Arc::new(ShardCounters::default()))
    }

    fn end<M: Send + 'static, R: Send + 'static>(
        &self,
        counters: &Arc<ShardCounters>,
    ) -> Bus<M, R> {
        let key = TypeId::of::<(M, R)>();
        if let Some(end) = self.ends.borrow().get(&key)
            && let Ok(end) = end.clone().downcast::<LocalEnd<M, R>>()
        {
            return Bus::new(end);
        }
        let end = Rc::new(
            LocalEnd::new(
                self.me,
                self.incarnation,
                self.registry.mesh::<M, R>(),
                counters.clone(),
            )
            .with_spin(self.spin),
        );
        self.ends.borrow_mut().insert(key, end.clone());
        Bus::new(end)
    }
}
