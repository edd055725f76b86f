//! The reactor's executor: a fixed pool of threads that runs blocking work off the loop
//! (`--executor N`), as Python's `ThreadPoolExecutor` runs it for Tornado's
//! `IOLoop.run_in_executor`. The loop hands it a job; the job ends by handing a callback
//! back through the loop's waker.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::server::Server;

// ANCHOR: executor
/// A piece of blocking work and what to do after it.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads for blocking work (Python's ThreadPoolExecutor).
pub struct Executor {
    jobs: Sender<Job>,
}

impl Executor {
    pub fn new(threads: usize, server: &Arc<Server>) -> io::Result<Executor> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue: Arc<Mutex<Receiver<Job>>> = Arc::clone(&queue);
            let server = Arc::clone(server);
            thread::Builder::new()
                .name(format!("executor-{i}"))
                .spawn(move || {
                    server.stats.thread_started();
                    loop {
                        let job = queue.lock().unwrap().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break, // the loop is gone
                        }
                    }
                    server.stats.thread_ended();
                })?;
        }
        Ok(Executor { jobs })
    }

    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.jobs.send(Box::new(job));
    }
}
// ANCHOR_END: executor
