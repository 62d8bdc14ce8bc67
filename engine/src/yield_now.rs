//! `yield_now`: lets the tasks already woken run before the caller goes on, on any
//! executor (the engine runs on glommio in the server, on `futures`' executors in tests).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Resolves on its second poll, having woken its task on the first: the executor queues
/// the task behind those already runnable.
pub(crate) fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// Future of [`yield_now`].
pub(crate) struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;

    use super::*;

    #[test]
    fn a_task_that_yields_runs_after_the_tasks_already_runnable() {
        let mut pool = LocalPool::new();
        let order = Rc::new(RefCell::new(Vec::new()));
        let (first, second) = (order.clone(), order.clone());
        pool.spawner()
            .spawn_local(async move {
                first.borrow_mut().push("yielding");
                yield_now().await;
                first.borrow_mut().push("after the yield");
            })
            .expect("spawned");
        pool.spawner()
            .spawn_local(async move { second.borrow_mut().push("other task") })
            .expect("spawned");
        pool.run();
        assert_eq!(
            *order.borrow(),
            ["yielding", "other task", "after the yield"]
        );
    }
}
