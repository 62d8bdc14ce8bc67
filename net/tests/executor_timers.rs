//! A glommio executor keeps its timers armed across turns and still wakes and preempts on
//! time (issue 15).
//!
//! glommio 0.9.0 cancelled and re-armed its preemption timers on every turn of an
//! executor's loop, several SQEs and `io_uring_enter`s per turn. The patched copy in
//! `vendor/glommio` keeps an armed timer while it still serves (vendor/README.md): the
//! preemption timer while at least half a quota is left, the wake-up for a user timer
//! while it is not later than the user timer; and the poll that ends a sleep for the
//! latency ring's completions stays armed until it fires. These tests check the ways that
//! could go wrong: a sleeping executor keeping a wake-up that is later than a timer
//! created since, a long-running task no longer being preempted, and (both tests hang) a
//! sleep that no timer ends.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::timer::sleep;
use glommio::{LocalExecutorBuilder, Placement};

/// Far longer than any wait here: a timer that waits this long was woken by nothing.
const LATE: Duration = Duration::from_secs(5);

#[test]
fn a_sooner_timer_wakes_a_sleeping_executor_on_time() {
    let (sender, receiver) = shared_channel::new_bounded::<()>(1);
    let waker = LocalExecutorBuilder::new(Placement::Unbound)
        .name("timer-waker")
        .spawn(move || async move {
            let sender = sender.connect().await;
            // Long enough that the other executor is asleep with its 30 s wake-up armed.
            sleep(Duration::from_millis(100)).await;
            sender.send(()).await.unwrap();
        })
        .unwrap();
    let sleeper = LocalExecutorBuilder::new(Placement::Unbound)
        // The preemption timer, also kept armed across a sleep, would wake the executor
        // within a quota and hide a late wake-up: a quota longer than the test.
        .preempt_timer(Duration::from_secs(60))
        .name("timer-sleeper")
        .spawn(move || async move {
            let receiver = receiver.connect().await;
            // The executor's next timer, so its wake-up, is 30 s away...
            let far = glommio::spawn_local(sleep(Duration::from_secs(30))).detach();
            // ...until the message (an eventfd wake, no timer) starts a 10 ms one.
            receiver.recv().await.unwrap();
            let started = Instant::now();
            sleep(Duration::from_millis(10)).await;
            let waited = started.elapsed();
            far.cancel();
            waited
        })
        .unwrap();
    waker.join().unwrap();
    let waited = sleeper.join().unwrap();
    assert!(
        waited < LATE,
        "a 10 ms sleep took {waited:?}: the 30 s wake-up stayed armed"
    );
}

#[test]
fn a_long_running_task_is_still_preempted_every_quota() {
    const QUOTA: Duration = Duration::from_millis(20);
    let preemptions = LocalExecutorBuilder::new(Placement::Unbound)
        .preempt_timer(QUOTA)
        .name("timer-preempt")
        .spawn(|| async {
            let mut preemptions = 0u32;
            let started = Instant::now();
            // Turns of work between sleeps, so the preemption timer is also kept across
            // parks: 20 rounds of 50 ms of spinning each, about 50 quotas.
            for _ in 0..20 {
                let round = Instant::now();
                while round.elapsed() < Duration::from_millis(50) {
                    if glommio::executor().need_preempt() {
                        preemptions += 1;
                        glommio::executor().yield_now().await;
                    }
                }
                sleep(Duration::from_millis(1)).await;
                assert!(started.elapsed() < 6 * LATE, "the rounds took too long");
            }
            preemptions
        })
        .unwrap()
        .join()
        .unwrap();
    // A quota kept armed ends a turn after half to one quota: 50 to 100 preemptions in the
    // second of spinning, fewer when the machine is busy; none means the timer is lost.
    assert!(
        preemptions >= 10,
        "{preemptions} preemptions in 1 s of spinning with a 20 ms quota"
    );
}
