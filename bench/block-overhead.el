;;; block-overhead.el --- Time one short chat-ai block three ways  -*- lexical-binding: t; -*-

;;; Commentary:

;; Run by bench/helper_bench.py: emacs -Q --batch -L . -l bench/block-overhead.el
;; with CHAT_AI_BENCH_URL, CHAT_AI_BENCH_HELPER and CHAT_AI_BENCH_ROUNDS set.
;; Each round, in turn:
;;
;; - persistent: a chat-ai block, from executing it to the result in the
;;   buffer, served by the long-lived helper (started before timing);
;; - one-shot: the same block with a helper process of its own;
;; - curl: one curl process started from Emacs with the same request on
;;   its standard input, its streamed output read into a buffer.
;;
;; Prints one JSON object mapping each way to its list of seconds.

;;; Code:

(require 'ob-chat-ai)

(defvar bench-url (getenv "CHAT_AI_BENCH_URL")
  "The loopback server's base URL.")

(defconst bench-block
  (format "#+begin_src chat-ai :model m :base-url %s\nhi\n#+end_src\n" bench-url)
  "The block every round evaluates.")

(defun bench-block-seconds (persistent)
  "Return the seconds one block takes, with a PERSISTENT helper or not."
  (with-temp-buffer
    (org-mode)
    (insert bench-block)
    (goto-char (point-min))
    (let ((ob-chat-ai-persistent-helper persistent)
          (started (float-time)))
      (org-babel-execute-src-block)
      (prog1 (- (float-time) started)
        (unless (string-search "#+RESULTS:\n: hi\n" (buffer-string))
          (error "Unexpected result: %s" (buffer-string)))))))

(defun bench-curl-seconds ()
  "Return the seconds one curl process takes for the same request."
  (with-temp-buffer
    (let* ((started (float-time))
           (process (make-process
                     :name "curl"
                     :buffer (current-buffer)
                     :command (list "curl" "-sSN" "-H" "Content-Type: application/json"
                                    "--data-binary" "@-"
                                    (concat bench-url "/chat/completions"))
                     :connection-type 'pipe
                     :coding 'utf-8-unix
                     :noquery t
                     :sentinel #'ignore)))
      (process-send-string
       process
       (json-serialize '((model . "m") (stream . t)
                         (messages . [((role . "user") (content . "hi"))]))))
      (process-send-eof process)
      (while (process-live-p process)
        (accept-process-output process 0.05))
      (prog1 (- (float-time) started)
        (unless (string-search "[DONE]" (buffer-string))
          (error "Unexpected curl output: %s" (buffer-string)))))))

(let ((ob-chat-ai-helper-command (list (getenv "CHAT_AI_BENCH_HELPER") "--serve"))
      (org-confirm-babel-evaluate nil)
      (inhibit-message t)
      (rounds (string-to-number (getenv "CHAT_AI_BENCH_ROUNDS")))
      (persistent nil)
      (one-shot nil)
      (curl nil))
  (bench-block-seconds t)
  (bench-block-seconds nil)
  (bench-curl-seconds)
  (dotimes (_ rounds)
    (push (bench-block-seconds t) persistent)
    (push (bench-block-seconds nil) one-shot)
    (push (bench-curl-seconds) curl))
  (princ (json-serialize `((persistent . ,(vconcat persistent))
                           (one-shot . ,(vconcat one-shot))
                           (curl . ,(vconcat curl)))))
  (terpri))

;;; block-overhead.el ends here
