//! How a call ends: its [`Finish`], the result or error it answers with,
//! and the endpoints it tried.

use super::{Call, Last};
use crate::error::Error;
use crate::policy::retry::Stop;
use crate::policy::timeout::Deadline;

/// Why a call is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Answer with the last attempt's result: a success, a non-retryable
    /// failure, or the last retryable failure when retrying stopped for
    /// this reason.
    Answer(Stop),
    /// The deadline passed.
    Deadline,
    /// No endpoint could take a round's attempt.
    NoEndpoint,
}

impl Call {
    /// The call's answer for `finish`: `kept` is the result the driver kept
    /// (the last answered attempt's, its error already a towline [`Error`]),
    /// `no_endpoint` the error for a call that found no endpoint.
    ///
    /// A response is returned as it is, even one the classifier called a
    /// failure: the classifier steers retries, it does not rewrite answers.
    /// An error is wrapped to say why retrying stopped:
    /// [`Error::RetriesExhausted`] after more than one round,
    /// [`Error::BudgetExhausted`], [`Error::DeadlineExceeded`] (the deadline
    /// passed or left no room for another round), each carrying the last
    /// error; an attempt cut by its timeout is [`Error::AttemptTimeout`].
    pub fn result<T>(
        &self,
        finish: Finish,
        kept: Option<Result<T, Error>>,
        no_endpoint: impl FnOnce() -> Error,
    ) -> Result<T, Error> {
        let last = match (self.last, kept) {
            (Last::Timeout(t), _) => Some(Err(Error::AttemptTimeout(t))),
            (_, kept) => kept,
        };
        match finish {
            Finish::Answer(stop) => match last {
                Some(result) => result.map_err(|e| {
                    final_error(stop, e, self.retry.attempts(), self.deadline.as_ref())
                }),
                None => Err(no_endpoint()),
            },
            Finish::Deadline => {
                let last = last.and_then(Result::err);
                Err(match &self.deadline {
                    Some(d) => d.error(last),
                    None => last.unwrap_or_else(no_endpoint),
                })
            }
            Finish::NoEndpoint => Err(last.and_then(Result::err).unwrap_or_else(no_endpoint)),
        }
    }
}

/// The error a call ends with when retrying stops after a failure.
fn final_error(stop: Stop, last: Error, attempts: u32, deadline: Option<&Deadline>) -> Error {
    match stop {
        Stop::AttemptsExhausted if attempts > 1 => Error::RetriesExhausted {
            attempts,
            last: Box::new(last),
        },
        Stop::BudgetExhausted => Error::BudgetExhausted {
            last: Box::new(last),
        },
        Stop::DeadlineTooClose => match deadline {
            Some(d) => d.error(Some(last)),
            None => last,
        },
        _ => last,
    }
}

/// The endpoints a call has tried, without allocating for the first few.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    first: [usize; 4],
    len: usize,
    more: Vec<usize>,
}

impl Tried {
    /// No endpoint tried: a call's first attempt.
    pub const NONE: Tried = Tried {
        first: [0; 4],
        len: 0,
        more: Vec::new(),
    };

    /// Adds endpoint `i`.
    pub fn insert(&mut self, i: usize) {
        if self.len < self.first.len() {
            self.first[self.len] = i;
            self.len += 1;
        } else {
            self.more.push(i);
        }
    }

    /// True when endpoint `i` was tried.
    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        self.first[..self.len].contains(&i) || self.more.contains(&i)
    }

    /// True when no endpoint was tried yet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
