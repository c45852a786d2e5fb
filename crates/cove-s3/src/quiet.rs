//! s3s reports every client mistake (a bad signature, a missing key) as an
//! ERROR event. Those are answers, not failures of Cove, so the front runs
//! s3s under this subscriber, which forwards everything to Cove's own except
//! s3s's ERROR events. Cove's failures still surface: handlers log their own
//! internal errors, and the front logs every 5xx.

use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

pub struct QuietS3s {
    inner: Dispatch,
    max: LevelFilter,
}

impl QuietS3s {
    /// Wraps the subscriber in effect now (Cove installs its own at start).
    pub fn dispatch() -> Dispatch {
        let inner = tracing::dispatcher::get_default(Dispatch::clone);
        Dispatch::new(QuietS3s {
            inner,
            max: LevelFilter::current(),
        })
    }
}

fn silenced(meta: &Metadata<'_>) -> bool {
    meta.is_event() && *meta.level() == Level::ERROR && meta.target().starts_with("s3s")
}

impl Subscriber for QuietS3s {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(meta)
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        !silenced(meta) && self.inner.enabled(meta)
    }
    fn event_enabled(&self, event: &Event<'_>) -> bool {
        !silenced(event.metadata())
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }
    fn event(&self, event: &Event<'_>) {
        if !silenced(event.metadata()) {
            self.inner.event(event)
        }
    }
    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }
    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }
    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }
    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }
}
