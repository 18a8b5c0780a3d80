;;; stream-into-buffer.el --- Stream one long reply into an Org buffer, timed  -*- lexical-binding: t; -*-

;;; Commentary:

;; Run by bench/stream_bench.py: emacs -Q --batch -L . -l bench/stream-into-buffer.el
;; with CHAT_AI_BENCH_URL, CHAT_AI_BENCH_MODEL and CHAT_AI_BENCH_HELPER set.
;; Evaluates one asynchronous chat-ai block whose reply streams from the
;; loopback server, while a 10 ms repeating timer notes how late it fires.
;; A short block runs first, so that the persistent helper is running, as
;; it is in a session where any block has run before.
;; Prints one JSON object: seconds from C-c C-c to the finished result,
;; the timer's lateness in seconds, and the length of the result.

;;; Code:

(require 'ob-chat-ai)

(let* ((ob-chat-ai-async 'always)
       (ob-chat-ai-helper-command (list (getenv "CHAT_AI_BENCH_HELPER") "--serve"))
       (org-confirm-babel-evaluate nil)
       (lateness nil)
       (last-fire nil)
       (timer (run-at-time 0.01 0.01
                           (lambda ()
                             (let ((now (float-time)))
                               (when last-fire
                                 (push (max 0.0 (- now last-fire 0.01)) lateness))
                               (setq last-fire now)))))
       started elapsed)
  (with-temp-buffer
    (org-mode)
    (insert (format "#+begin_src chat-ai :model m :base-url %s :async no\nhi\n#+end_src\n"
                    (getenv "CHAT_AI_BENCH_URL")))
    (goto-char (point-min))
    (org-babel-execute-src-block)
    (erase-buffer)
    (setq lateness nil last-fire nil)
    (insert (format "#+begin_src chat-ai :model %s :base-url %s :results raw drawer\nGo.\n#+end_src\n"
                    (getenv "CHAT_AI_BENCH_MODEL") (getenv "CHAT_AI_BENCH_URL")))
    (goto-char (point-min))
    (setq started (float-time))
    (let ((inhibit-message t))
      (org-babel-execute-src-block)
      (while ob-chat-ai--jobs
        (accept-process-output nil 0.005)))
    (setq elapsed (- (float-time) started))
    (cancel-timer timer)
    (princ (json-serialize
            `((seconds . ,elapsed)
              (lateness . ,(vconcat lateness))
              (chars . ,(buffer-size)))))
    (terpri)))

;;; stream-into-buffer.el ends here
