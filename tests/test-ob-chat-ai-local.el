;;; test-ob-chat-ai-local.el --- ERT tests against the real local model  -*- lexical-binding: t; -*-

;;; Commentary:

;; Real chat-ai blocks in real Org buffers, answered by a real model:
;; SmolLM2-135M-Instruct served by llama-cpp-python on loopback.
;;
;; Run under chat-ai-local, which starts the server and says where:
;;   chat-ai-local --port 0 run -- emacs -Q --batch -L . \
;;     -l tests/test-ob-chat-ai-local.el -f ert-run-tests-batch-and-exit
;; (make ert-local).  Without CHAT_AI_LOCAL_URL every test fails, saying so.

;;; Code:

;; The usage log of the helpers these tests run goes to a directory of its own.
(setenv "XDG_STATE_HOME" (make-temp-file "chat-ai-test-state" t))

(require 'ert)
(require 'ob-chat-ai)

(defconst ob-chat-ai-local-test-root
  (file-name-directory
   (directory-file-name (file-name-directory (or load-file-name buffer-file-name))))
  "The repository root.")

(defconst ob-chat-ai-local-test-python
  (expand-file-name (or (getenv "CHAT_AI_TEST_PYTHON") ".venv/bin/python")
                    ob-chat-ai-local-test-root)
  "The Python with the helper installed.")

(defmacro ob-chat-ai-local-test-with-org (text &rest body)
  "Run BODY in an Org buffer holding TEXT, its blocks asking the local model."
  (declare (indent 1) (debug t))
  `(progn
     (unless (getenv "CHAT_AI_LOCAL_URL")
       (ert-fail "CHAT_AI_LOCAL_URL is not set: run these tests with make ert-local"))
     (let ((org-confirm-babel-evaluate nil)
           (ob-chat-ai-provider "local")
           (ob-chat-ai-helper-command
            (list ob-chat-ai-local-test-python "-m" "chat_ai_helper" "--serve")))
       (with-temp-buffer
         (org-mode)
         (insert ,text)
         (goto-char (point-min))
         ,@body))))

(defun ob-chat-ai-local-test-result ()
  "Return the result of the first block, as Babel reads it."
  (goto-char (point-min))
  (re-search-forward "^#\\+begin_src")
  (goto-char (org-babel-where-is-src-block-result))
  (org-babel-read-result))

(defun ob-chat-ai-local-test-check-reply (text)
  "Check that TEXT is a real reply: some words, no error, no mangled characters."
  (should (stringp text))
  (should (string-match-p "[[:alpha:]]\\{2,\\}" text))
  (should-not (string-match-p "chat-ai error" text))
  (should-not (string-search "\ufffd" text)))

(ert-deftest ob-chat-ai-local-test-plain-reply ()
  (ob-chat-ai-local-test-with-org
      "#+begin_src chat-ai :max-tokens 40 :stream no :temperature 0
What is the capital of France?
#+end_src
"
    (re-search-forward "^#\\+begin_src")
    (org-babel-execute-src-block)
    (ob-chat-ai-local-test-check-reply (ob-chat-ai-local-test-result))))

(ert-deftest ob-chat-ai-local-test-japanese-prompt-streams-asynchronously ()
  (ob-chat-ai-local-test-with-org
      "#+begin_src chat-ai :max-tokens 40 :system \"Answer briefly.\"
Server-Sent Eventについて教えて
#+end_src

After the block.
"
    (let ((ob-chat-ai-async 'always))
      (re-search-forward "^#\\+begin_src")
      (let ((before (buffer-string)))
        (org-babel-execute-src-block)
        (should (equal (buffer-string) before)))
      (should (seq-some (lambda (overlay)
                          (string-search "chat-ai: waiting for smollm2"
                                         (or (overlay-get overlay 'after-string) "")))
                        (overlays-in (point-min) (point-max))))
      (with-timeout (120 (ert-fail "No reply within 120 s"))
        (while ob-chat-ai--jobs
          (accept-process-output nil 0.05))))
    (should (string-suffix-p "\n\nAfter the block.\n" (buffer-string)))
    (should-not (string-search "waiting for" (buffer-string)))
    (ob-chat-ai-local-test-check-reply (ob-chat-ai-local-test-result))))

(ert-deftest ob-chat-ai-local-test-session-sends-its-history ()
  (ob-chat-ai-local-test-with-org
      "#+begin_src chat-ai :session s :max-tokens 30 :temperature 0 :stream no
Name a colour.
#+end_src

#+begin_src chat-ai :session s :max-tokens 30 :temperature 0
Why that one?
#+end_src
"
    (re-search-forward "^#\\+begin_src")
    (org-babel-execute-src-block)
    (let ((first (ob-chat-ai-local-test-result)))
      (ob-chat-ai-local-test-check-reply first)
      (goto-char (point-max))
      (re-search-backward "^#\\+begin_src")
      (let* ((request (json-parse-string (org-babel-execute-src-block
                                          nil nil '((:dry-run . "yes")))
                                         :object-type 'alist :array-type 'list))
             (messages (alist-get 'messages (alist-get 'body request))))
        (should (equal (mapcar (lambda (m) (alist-get 'role m)) messages)
                       '("user" "assistant" "user")))
        ;; The model's text, without chat-ai's notes (it may stop early).
        (let ((answer (alist-get 'content (nth 1 messages))))
          (should (string-match-p "[[:alpha:]]\\{2,\\}" answer))
          (should (string-prefix-p answer (string-trim first)))
          (should-not (string-search "[chat-ai:" answer))))
      (org-babel-execute-src-block)
      (goto-char (point-max))
      (re-search-backward "^#\\+begin_src")
      (goto-char (org-babel-where-is-src-block-result))
      (ob-chat-ai-local-test-check-reply (org-babel-read-result)))))

(provide 'test-ob-chat-ai-local)

;;; test-ob-chat-ai-local.el ends here
