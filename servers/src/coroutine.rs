//! The reactor's coroutines: a small executor of our own for `async fn`s, with no
//! runtime crate, so that nothing is hidden. The loop (`models/reactor.rs`) drives it:
//! it spawns a coroutine, polls the woken ones once a turn, and turns each sleep they
//! await into a timer on its heap.
//!
//! An `async fn` compiles to a state machine that implements `Future`: `poll` runs it to
//! an `.await` that is not ready (it returns `Pending`, having left its waker with
//! whatever will be ready) or to its end. Something must call `poll` again when it can
//! make progress: that is this executor, and the waker is how it hears so.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{self, Context, Poll, Wake};
use std::thread::{self, ThreadId};
use std::time::Instant;

/// A coroutine: a future, pinned where it lies, whose result is `T`.
type Task<T> = Pin<Box<dyn Future<Output = T>>>;

/// One loop's coroutines, each ending in a `T` (for the reactor, a callback).
pub struct Coroutines<T> {
    /// The coroutines not yet finished, and those whose wakers were woken since they
    /// were last polled (woken from any thread, so behind a lock).
    tasks: HashMap<u64, Task<T>>,
    next_task: u64,
    woken: Arc<Mutex<Vec<u64>>>,
    /// Timers the coroutines' sleeps asked for while being polled: when, and the waker
    /// to wake then.
    sleeps: Rc<RefCell<Vec<(Instant, task::Waker)>>>,
    /// Wakes the loop from another thread (its eventfd).
    wake_loop: Arc<dyn Fn() + Send + Sync>,
}

impl<T: 'static> Coroutines<T> {
    /// `wake_loop` makes the loop's wait return: a coroutine woken on another thread is
    /// otherwise not polled until something else wakes the loop.
    pub fn new(wake_loop: impl Fn() + Send + Sync + 'static) -> Coroutines<T> {
        Coroutines {
            tasks: HashMap::new(),
            next_task: 0,
            woken: Arc::new(Mutex::new(Vec::new())),
            sleeps: Rc::new(RefCell::new(Vec::new())),
            wake_loop: Arc::new(wake_loop),
        }
    }

    /// Store `coroutine`, woken: nothing runs until it is polled.
    pub fn spawn(&mut self, coroutine: impl Future<Output = T> + 'static) {
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.insert(id, Box::pin(coroutine));
        self.woken.lock().unwrap().push(id);
    }

    /// A future ready once `when` has passed, which asks for a timer when it is polled.
    pub fn sleep(&self, when: Instant) -> Sleep {
        Sleep {
            when,
            sleeps: Rc::clone(&self.sleeps),
        }
    }

    /// Some coroutine was woken and waits to be polled: the loop must not sleep.
    pub fn any_woken(&self) -> bool {
        !self.woken.lock().unwrap().is_empty()
    }

    /// The coroutines woken since the last call, each to be polled once.
    pub fn woken(&mut self) -> Vec<u64> {
        std::mem::take(&mut *self.woken.lock().unwrap())
    }

    /// Poll coroutine `id` once: its result if it ran to its end.
    pub fn poll(&mut self, id: u64) -> Option<T> {
        // A task woken twice, or woken after it finished, has nothing more to do.
        let mut task = self.tasks.remove(&id)?;
        let waker = task::Waker::from(Arc::new(TaskWaker {
            id,
            woken: Arc::clone(&self.woken),
            thread: thread::current().id(),
            wake_loop: Arc::clone(&self.wake_loop),
        }));
        match task.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => {
                self.tasks.insert(id, task);
                None
            }
        }
    }

    /// The timers the sleeps just polled asked for: each wakes its task when it fires.
    pub fn sleeps(&mut self) -> Vec<(Instant, task::Waker)> {
        self.sleeps.borrow_mut().drain(..).collect()
    }
}

// ANCHOR: sleep
/// What a coroutine awaits to wait without a thread: ready once `when` has passed.
pub struct Sleep {
    when: Instant,
    sleeps: Rc<RefCell<Vec<(Instant, task::Waker)>>>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.when {
            return Poll::Ready(());
        }
        // Not yet: leave the waker with the loop, which sets a timer to wake it.
        self.sleeps
            .borrow_mut()
            .push((self.when, cx.waker().clone()));
        Poll::Pending
    }
}

/// A coroutine's waker: it puts the task back on the loop's list to poll. From another
/// thread it also wakes the loop (its eventfd), as `add_callback` does, or the loop
/// would not see it until something else woke it.
struct TaskWaker {
    id: u64,
    woken: Arc<Mutex<Vec<u64>>>,
    thread: ThreadId,
    wake_loop: Arc<dyn Fn() + Send + Sync>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.woken.lock().unwrap().push(self.id);
        if thread::current().id() != self.thread {
            (self.wake_loop)();
        }
    }
}
// ANCHOR_END: sleep
