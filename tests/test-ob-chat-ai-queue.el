;;; test-ob-chat-ai-queue.el --- ERT tests for many blocks at once  -*- lexical-binding: t; -*-

;;; Commentary:

;; Real blocks run asynchronously through the real helper, whose queue
;; lets at most :max-concurrent requests go to the loopback server at
;; once: what a queued block shows, cancelling queued blocks, the list
;; of requests, and the progress and summary of a run of many blocks.
;; Load after tests/test-ob-chat-ai.el.

;;; Code:

(require 'ert)
(unless (featurep 'test-ob-chat-ai)
  (load (expand-file-name "test-ob-chat-ai.el"
                          (file-name-directory (or load-file-name buffer-file-name)))
        nil t))

(defconst ob-chat-ai-test-queue-document "* Running
#+begin_src chat-ai :model hang :max-concurrent 1
first
#+end_src

* Waiting
#+begin_src chat-ai :model m :max-concurrent 1
second
#+end_src

* Waiting too
#+begin_src chat-ai :model m :max-concurrent 1
third
#+end_src
"
  "Three blocks to one server taking one request at a time; the first hangs.")

(defun ob-chat-ai-test-queue-start (&rest headings)
  "Run the blocks under HEADINGS in order, once the first one's request is sent.
What the server said of earlier tests' requests is read and forgotten first."
  (while (accept-process-output ob-chat-ai-test-server 0.2))
  (ob-chat-ai-test-clear-received)
  (ob-chat-ai-test-execute (format "^\\* %s\n#\\+begin_src" (car headings)))
  (ob-chat-ai-test-received 1)
  (dolist (heading (cdr headings))
    (ob-chat-ai-test-execute (format "^\\* %s\n#\\+begin_src" heading))))

(defun ob-chat-ai-test-queue-contents ()
  "Return the user content of each request the server received."
  (mapcar (lambda (request)
            (alist-get 'content (aref (alist-get 'messages (alist-get 'body request)) 0)))
          (ob-chat-ai-test-received)))

(defun ob-chat-ai-test-queue-at (heading)
  "Move point to the block under HEADING."
  (goto-char (point-min))
  (re-search-forward (format "^\\* %s\n" heading))
  (forward-line 0))

(ert-deftest ob-chat-ai-test-queued-block-says-so-then-answers ()
  (ob-chat-ai-test-async ob-chat-ai-test-queue-document
    (ob-chat-ai-test-queue-start "Running" "Waiting")
    (ob-chat-ai-test-wait-for "#+end_src\n: chat-ai: queued, 0 ahead  [")
    (should (equal (buffer-string) ob-chat-ai-test-queue-document))
    (ob-chat-ai-test-queue-at "Running")
    (forward-line)
    (ob-chat-ai-cancel)
    (ob-chat-ai-test-idle)
    (should (string-search "second\n#+end_src\n\n#+RESULTS:\n: second\n"
                           (buffer-string)))
    (should-not (string-search "queued" (ob-chat-ai-test-shown)))
    (should (equal (ob-chat-ai-test-queue-contents) '("first" "second")))))

(defconst ob-chat-ai-test-queue-earlier
  (replace-regexp-in-string "second\n#\\+end_src\n"
                            "second\n#+end_src\n\n#+RESULTS:\n: the earlier answer\n"
                            ob-chat-ai-test-queue-document)
  "The three blocks, the second with an earlier result.")

(ert-deftest ob-chat-ai-test-queued-block-cancelled-is-never-sent ()
  (ob-chat-ai-test-async ob-chat-ai-test-queue-earlier
    (ob-chat-ai-test-queue-start "Running" "Waiting" "Waiting too")
    (ob-chat-ai-test-wait-for "third\n#+end_src\n: chat-ai: queued, 1 ahead")
    (ob-chat-ai-test-queue-at "Waiting")
    (forward-line)
    (ob-chat-ai-cancel)
    (ob-chat-ai-test-wait-for "third\n#+end_src\n: chat-ai: queued, 0 ahead")
    (should (equal (buffer-string) ob-chat-ai-test-queue-earlier))
    (should (string-search
             "chat-ai: cancelled before it was sent; the block's result is unchanged\n"
             (ob-chat-ai-test-messages)))
    (ob-chat-ai-test-queue-at "Running")
    (forward-line)
    (ob-chat-ai-cancel)
    (ob-chat-ai-test-idle)
    (should (string-search "third\n#+end_src\n\n#+RESULTS:\n: third\n" (buffer-string)))
    (should (equal (ob-chat-ai-test-queue-contents) '("first" "third")))))

(ert-deftest ob-chat-ai-test-cancel-all-empties-the-queue ()
  (ob-chat-ai-test-async ob-chat-ai-test-queue-document
    (ob-chat-ai-test-queue-start "Running" "Waiting" "Waiting too")
    (ob-chat-ai-test-wait-for "third\n#+end_src\n: chat-ai: queued, 1 ahead")
    (ob-chat-ai-cancel-all)
    (ob-chat-ai-test-idle)
    (should (string-search "chat-ai: cancelled 3 requests\n" (ob-chat-ai-test-messages)))
    (should (string-search "chat-ai: 0 answered, 0 failed, 0 retried after 429, 3 cancelled\n"
                           (ob-chat-ai-test-messages)))
    (goto-char (point-max))
    (insert "\n* After\n#+begin_src chat-ai :model m :max-concurrent 1\nfourth\n#+end_src\n")
    (ob-chat-ai-test-execute "^\\* After\n#\\+begin_src")
    (ob-chat-ai-test-idle)
    (should (string-suffix-p "fourth\n#+end_src\n\n#+RESULTS:\n: fourth\n" (buffer-string)))
    (should (equal (ob-chat-ai-test-queue-contents) '("first" "fourth")))))

(ert-deftest ob-chat-ai-test-list-requests-jumps-and-cancels ()
  (ob-chat-ai-test-async ob-chat-ai-test-queue-document
    (ob-chat-ai-test-queue-start "Running" "Waiting")
    (ob-chat-ai-test-wait-for "second\n#+end_src\n: chat-ai: queued, 0 ahead")
    (let ((org (current-buffer)))
      (save-window-excursion
        (ob-chat-ai-list-requests)
        (should (eq major-mode 'ob-chat-ai-requests-mode))
        (let ((text (buffer-string)))
          (should (string-match-p "running .*first" text))
          (should (string-match-p "queued, 0 ahead .*second" text)))
        (goto-char (point-min))
        (re-search-forward "queued, 0 ahead")
        (ob-chat-ai-requests-cancel)
        (should-not (string-search "second" (buffer-string)))
        (with-current-buffer org
          (should (equal (buffer-string) ob-chat-ai-test-queue-document)))
        (goto-char (point-min))
        (re-search-forward "running")
        (ob-chat-ai-requests-visit)
        (should (eq (current-buffer) org))
        (should (looking-at "#\\+begin_src chat-ai :model hang")))
      (with-current-buffer org
        (ob-chat-ai-cancel-all)
        (ob-chat-ai-test-idle)
        (should (equal (ob-chat-ai-test-queue-contents) '("first")))))))

(ert-deftest ob-chat-ai-test-many-blocks-show-progress-and-a-summary ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model m
one
#+end_src

#+begin_src chat-ai :model error-400
two
#+end_src

#+begin_src chat-ai :model flaky-2-429-queue_summary :max-retries 4
three
#+end_src

#+begin_src chat-ai :model m
four
#+end_src
"
    (org-babel-execute-buffer)
    (when ob-chat-ai--jobs
      (should (string-match-p
               "\\` chat-ai\\[[0-9]+ running, [0-9]+ queued, [0-9]+ done, [0-9]+ failed\\]\\'"
               (ob-chat-ai--mode-line))))
    (let ((text (ob-chat-ai-test-idle)))
      (should (string-search "one\n#+end_src\n\n#+RESULTS:\n: one\n" text))
      (should (string-search "three\n#+end_src\n\n#+RESULTS:\n: three\n" text))
      (should (string-search "four\n#+end_src\n\n#+RESULTS:\n: four\n" text)))
    (should (equal (ob-chat-ai-progress-summary)
                   "3 answered, 1 failed, 1 retried after 429"))
    (should (string-search "chat-ai: 3 answered, 1 failed, 1 retried after 429\n"
                           (ob-chat-ai-test-messages)))
    (should-not (ob-chat-ai--mode-line))))

(ert-deftest ob-chat-ai-test-queued-block-run-again-keeps-its-result ()
  (ob-chat-ai-test-async ob-chat-ai-test-queue-earlier
    (ob-chat-ai-test-queue-start "Running" "Waiting")
    (ob-chat-ai-test-wait-for "second\n#+end_src\n: chat-ai: queued, 0 ahead")
    (ob-chat-ai-test-execute "^\\* Waiting\n#\\+begin_src")
    (ob-chat-ai-test-wait-for "second\n#+end_src\n: chat-ai: queued, 0 ahead")
    (should (equal (buffer-string) ob-chat-ai-test-queue-earlier))
    ;; Queued, as waiting for the model and streaming, the block shows
    ;; its state under #+end_src, above the earlier result that stays.
    (should (string-match-p (concat "second\n#\\+end_src\n: chat-ai: queued, 0 ahead  "
                                    "\\[[0-9]+s, 0 chars\\]\n\n#\\+RESULTS:\n"
                                    ": the earlier answer\n")
                            (ob-chat-ai-test-shown)))
    (ob-chat-ai-cancel-all)
    (ob-chat-ai-test-idle)
    (should (string-search "second\n#+end_src\n\n#+RESULTS:\n: the earlier answer\n"
                           (buffer-string)))
    (should (equal (ob-chat-ai-test-queue-contents) '("first")))))

(ert-deftest ob-chat-ai-test-queued-block-is-not-dropped-as-unheard ()
  (let ((ob-chat-ai--silence-margin 1))
    (ob-chat-ai-test-async (replace-regexp-in-string
                            ":model m :max-concurrent 1\nsecond"
                            ":model m :max-concurrent 1 :timeout 1\nsecond"
                            ob-chat-ai-test-queue-document)
      (ob-chat-ai-test-queue-start "Running" "Waiting")
      (ob-chat-ai-test-wait-for "second\n#+end_src\n: chat-ai: queued, 0 ahead")
      ;; Unheard of for its :timeout and the margin, two seconds, the
      ;; request would be dropped; three times that, it is still waiting.
      (let ((until (+ (float-time) 6)))
        (ob-chat-ai-test-wait (lambda () (> (float-time) until))))
      (should (string-search "second\n#+end_src\n: chat-ai: queued, 0 ahead"
                             (ob-chat-ai-test-shown)))
      (should (= 2 (length (ob-chat-ai-process-open-requests))))
      (ob-chat-ai-test-queue-at "Running")
      (forward-line)
      (ob-chat-ai-cancel)
      (should (string-search "second\n#+end_src\n\n#+RESULTS:\n: second\n"
                             (ob-chat-ai-test-idle))))))

(ert-deftest ob-chat-ai-test-summary-waits-for-the-blocks-waiting-for-their-session ()
  (ob-chat-ai-test-async ob-chat-ai-test-session-of-three
    (org-babel-execute-buffer)
    (should (string-suffix-p "three\n#+end_src\n\n#+RESULTS:\n: three\n" (ob-chat-ai-test-idle)))
    (should (equal (ob-chat-ai-progress-summary) "3 answered, 0 failed, 0 retried after 429"))
    (should (string-search "chat-ai: 3 answered, 0 failed, 0 retried after 429\n"
                           (ob-chat-ai-test-messages)))))

(defconst ob-chat-ai-test-queue-held
  (replace-regexp-in-string ":model hang" ":model held" ob-chat-ai-test-queue-document)
  "The three blocks, the first held by the server until the test releases it.")

(ert-deftest ob-chat-ai-test-run-again-sends-no-request-it-replaces ()
  (ob-chat-ai-test-async ob-chat-ai-test-queue-held
    (ob-chat-ai-test-queue-start "Running" "Waiting" "Waiting too")
    (ob-chat-ai-test-wait-for "third\n#+end_src\n: chat-ai: queued, 1 ahead")
    (org-babel-execute-buffer)
    ;; The earlier requests are cancelled once the blocks have all run.
    (ob-chat-ai-test-wait (lambda () (= 3 (length (ob-chat-ai-process-open-requests)))))
    (ob-chat-ai-test-release)
    (let ((text (ob-chat-ai-test-idle)))
      (dolist (prompt '("first" "second" "third"))
        (should (string-search (format "%s\n#+end_src\n\n#+RESULTS:\n: %s\n" prompt prompt)
                               text))))
    (should (equal (ob-chat-ai-test-queue-contents) '("first" "first" "second" "third")))
    (should (equal (ob-chat-ai-progress-summary)
                   "3 answered, 0 failed, 0 retried after 429, 3 cancelled"))))

(provide 'test-ob-chat-ai-queue)

;;; test-ob-chat-ai-queue.el ends here
