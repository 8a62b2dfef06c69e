//! The debug-utils messenger: validation messages routed to `tracing` and counted.
//!
//! Every message of warning or error severity is counted and kept (up to a bound), so a test
//! can fail on any of them: see [`ValidationReport`]. Messages whose id is in
//! [`ALLOWED_MESSAGE_IDS`] are logged but not counted; the list is kept minimal and every entry
//! says why it is there.

use std::ffi::{CStr, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ash::vk;

/// Message ids (`VkDebugUtilsMessengerCallbackDataEXT::messageIdNumber`) that are logged but not
/// counted, each with the reason. Empty while nothing unrelated to gantry needs it.
pub const ALLOWED_MESSAGE_IDS: &[(i32, &str)] = &[];

/// How many message texts are kept for the report.
const KEPT_MESSAGES: usize = 64;

/// The counters the messenger writes; shared between the callback and the backend.
#[derive(Debug, Default)]
pub(crate) struct MessageLog {
    errors: AtomicU64,
    warnings: AtomicU64,
    allowed: AtomicU64,
    /// Counted messages not kept because `kept` was full.
    dropped: AtomicU64,
    kept: Mutex<Vec<String>>,
}

/// A snapshot of the validation messages seen so far by the backend's messenger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Messages of error severity.
    pub errors: u64,
    /// Messages of warning severity.
    pub warnings: u64,
    /// Messages of warning or error severity ignored through [`ALLOWED_MESSAGE_IDS`].
    pub allowed: u64,
    /// The text of the counted messages kept (at most 64 between two
    /// [`VulkanDevice::take_validation_messages`](crate::VulkanDevice::take_validation_messages)).
    pub messages: Vec<String>,
}

impl ValidationReport {
    /// Whether no message of warning level or above was counted.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.warnings == 0
    }
}

/// A handle on the backend's message counters that stays readable after the backend is
/// dropped, so that tests can check teardown too.
#[derive(Clone, Debug)]
pub struct ValidationCounter(pub(crate) std::sync::Arc<MessageLog>);

impl ValidationCounter {
    /// The messages counted so far.
    pub fn report(&self) -> ValidationReport {
        self.0.report()
    }
}

impl MessageLog {
    /// The kept messages since the last call (with a note of any not kept), clearing them;
    /// the counters are not reset.
    pub(crate) fn take(&self) -> Vec<String> {
        let mut out = self
            .kept
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default();
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            out.push(format!("... and {dropped} more validation message(s)"));
        }
        out
    }

    pub(crate) fn report(&self) -> ValidationReport {
        ValidationReport {
            errors: self.errors.load(Ordering::Relaxed),
            warnings: self.warnings.load(Ordering::Relaxed),
            allowed: self.allowed.load(Ordering::Relaxed),
            messages: self.kept.lock().map(|k| k.clone()).unwrap_or_default(),
        }
    }

    fn record(&self, severity: vk::DebugUtilsMessageSeverityFlagsEXT, id: i32, text: String) {
        let counted = severity.intersects(
            vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
                | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
        );
        if !counted {
            return;
        }
        if ALLOWED_MESSAGE_IDS
            .iter()
            .any(|&(allowed, _)| allowed == id)
        {
            self.allowed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.warnings.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() < KEPT_MESSAGES {
                kept.push(text);
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The severities and types the messenger listens to.
pub(crate) fn messenger_info(log: &MessageLog) -> vk::DebugUtilsMessengerCreateInfoEXT<'static> {
    vk::DebugUtilsMessengerCreateInfoEXT::default()
        .message_severity(
            vk::DebugUtilsMessageSeverityFlagsEXT::INFO
                | vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
                | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
        )
        .message_type(
            vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
        )
        .pfn_user_callback(Some(callback))
        // The pointer stays valid while the messenger exists: the backend keeps the log in an
        // `Arc` that it drops only after destroying the messenger (and the instance, for the
        // messenger chained into instance creation).
        .user_data(std::ptr::from_ref(log).cast_mut().cast())
}

/// The messenger callback.
///
/// # Safety
/// Called by the Vulkan loader only: `data` is null or points to a valid callback-data struct
/// whose strings are valid for the call, and `user` is the `MessageLog` pointer installed by
/// [`messenger_info`], alive as long as the messenger.
unsafe extern "system" fn callback(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    user: *mut c_void,
) -> vk::Bool32 {
    // SAFETY: the loader passes a valid pointer or null (see the function's contract).
    let Some(data) = (unsafe { data.as_ref() }) else {
        return vk::FALSE;
    };
    let cstr = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-null strings in the callback data are NUL-terminated and valid for the
            // duration of the callback.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let id_name = cstr(data.p_message_id_name);
    let message = cstr(data.p_message);
    let text = format!(
        "[{types:?}] {id_name} ({:#x}): {message}",
        data.message_id_number
    );
    if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
        tracing::error!(target: "gantry_vulkan::validation", "{text}");
    } else if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::WARNING) {
        tracing::warn!(target: "gantry_vulkan::validation", "{text}");
    } else {
        tracing::debug!(target: "gantry_vulkan::validation", "{text}");
    }
    // SAFETY: `user` is the `MessageLog` installed by `messenger_info`, which outlives the
    // messenger (see the function's contract); only shared access is taken.
    if let Some(log) = unsafe { user.cast::<MessageLog>().as_ref() } {
        log.record(severity, data.message_id_number, text);
    }
    vk::FALSE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_warnings_and_errors_only() {
        let log = MessageLog::default();
        log.record(vk::DebugUtilsMessageSeverityFlagsEXT::INFO, 1, "i".into());
        log.record(
            vk::DebugUtilsMessageSeverityFlagsEXT::WARNING,
            2,
            "w".into(),
        );
        log.record(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR, 3, "e".into());
        let r = log.report();
        assert_eq!((r.errors, r.warnings, r.allowed), (1, 1, 0));
        assert_eq!(r.messages, vec!["w".to_owned(), "e".to_owned()]);
        assert!(!r.is_clean());
        assert!(MessageLog::default().report().is_clean());
        assert_eq!(log.take(), vec!["w".to_owned(), "e".to_owned()]);
        assert!(log.take().is_empty());
        assert_eq!(log.report().errors, 1, "counters survive take");
    }
}
